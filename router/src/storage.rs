//! Object storage for the files users and agents produce: a local directory
//! (`file:DIR`, the default) or any S3 API (`s3://BUCKET`, e.g. Supabase Storage).
//!
//! Keys are always `users/{user id}/…`, built by the caller from ids the router
//! owns, never from a client's path.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::{
    ObjectStore, PutPayload, aws::AmazonS3Builder, buffered::BufWriter, local::LocalFileSystem,
    path::Path,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes kept from the start of a streamed object for content sniffing.
pub const HEAD_BYTES: usize = 8192;

/// Part size of streamed (multipart) uploads: S3's smallest allowed part.
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts of one streamed upload in flight at once. With [`PART_BYTES`] this
/// bounds the memory one stream holds at about 15 MiB whatever the object's size
/// (object_store's defaults, 10 MiB × 8, let one upload hold about 90 MiB).
const PARTS_IN_FLIGHT: usize = 2;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `JARVIS_STORAGE` is neither `file:DIR` nor `s3://BUCKET`.
    #[error("JARVIS_STORAGE must be file:DIR or s3://BUCKET, not {0:?}")]
    BadUrl(String),
    /// The local directory could not be created.
    #[error("creating storage directory {dir}")]
    Dir {
        /// The directory.
        dir: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No object has this key.
    #[error("no object at {0}")]
    NotFound(String),
    /// A streamed object grew past the limit its caller set; nothing was stored.
    #[error("{key} is larger than {limit} bytes")]
    TooLarge {
        /// The key that was being written.
        key: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// Reading the source or writing the destination of a stream failed.
    #[error("streaming {key}")]
    Io {
        /// The object's key.
        key: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// An S3 endpoint given explicitly (tests, or callers that do not use the `AWS_*`
/// environment that [`Storage::open`] reads).
#[derive(Clone, Debug)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The endpoint URL (e.g. `http://127.0.0.1:9000` or Supabase's
    /// `<SUPABASE_URL>/storage/v1/s3`); AWS when `None`.
    pub endpoint: Option<String>,
    /// The region name (any name for most non-AWS servers).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

/// What [`Storage::put_reader`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutInfo {
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the bytes stored.
    pub sha256: [u8; 32],
    /// The first bytes (at most [`HEAD_BYTES`]), for sniffing the content type.
    pub head: Bytes,
}

/// An object found by [`Storage::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A handle on the configured store.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
}

impl Storage {
    /// Opens the store named by a `JARVIS_STORAGE` value.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        let store: Arc<dyn ObjectStore> = if let Some(dir) = url.strip_prefix("file:") {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Dir {
                dir: dir.to_string(),
                source,
            })?;
            Arc::new(LocalFileSystem::new_with_prefix(dir)?)
        } else if let Some(bucket) = url.strip_prefix("s3://") {
            if bucket.is_empty() || bucket.contains('/') {
                return Err(StorageError::BadUrl(url.to_string()));
            }
            // Credentials, region and AWS_ENDPOINT_URL come from the standard AWS
            // variables; path-style addressing is what Supabase Storage speaks.
            Arc::new(
                AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(false)
                    .build()?,
            )
        } else {
            return Err(StorageError::BadUrl(url.to_string()));
        };
        Ok(Self { store })
    }

    /// Opens an S3 store from explicit settings (path-style addressing; plain
    /// `http://` endpoints are allowed, for local servers).
    pub fn s3(config: &S3Config) -> Result<Self, StorageError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_virtual_hosted_style_request(false);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        Ok(Self {
            store: Arc::new(builder.build()?),
        })
    }

    /// Stores `bytes` at `key`, replacing what was there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// The object at `key`, as a stream of chunks.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static, StorageError>
    {
        match self.store.get(&Path::from(key)).await {
            Ok(result) => Ok(result.into_stream().map(|r| r.map_err(StorageError::from))),
            Err(object_store::Error::NotFound { .. }) => {
                Err(StorageError::NotFound(key.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Streams `reader` to `key`, replacing what was there: small objects in one
    /// request, large ones as a multipart upload, never the whole object in memory
    /// (at most about [`PART_BYTES`] × ([`PARTS_IN_FLIGHT`] + 1) at a time).
    /// With `limit`, a source longer than `limit` bytes stores nothing and fails
    /// with [`StorageError::TooLarge`]; so does any read error.
    pub async fn put_reader<R: AsyncRead + Unpin + Send>(
        &self,
        key: &str,
        mut reader: R,
        limit: Option<u64>,
    ) -> Result<PutInfo, StorageError> {
        let mut writer = BufWriter::with_capacity(self.store.clone(), Path::from(key), PART_BYTES)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let outcome: Result<(), StorageError> = async {
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|source| StorageError::Io {
                        key: key.to_string(),
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                if let Some(limit) = limit
                    && size > limit
                {
                    return Err(StorageError::TooLarge {
                        key: key.to_string(),
                        limit,
                    });
                }
                let chunk = &buf[..n];
                hasher.update(chunk);
                if head.len() < HEAD_BYTES {
                    let take = (HEAD_BYTES - head.len()).min(n);
                    head.extend_from_slice(&chunk[..take]);
                }
                writer.put(Bytes::copy_from_slice(chunk)).await?;
            }
            writer.shutdown().await.map_err(|source| StorageError::Io {
                key: key.to_string(),
                source,
            })
        }
        .await;
        if let Err(e) = outcome {
            // A multipart upload begun is aborted; a single put never happened.
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "aborting an unfinished upload failed");
            }
            return Err(e);
        }
        Ok(PutInfo {
            size,
            sha256: hasher.finalize().into(),
            head: Bytes::from(head),
        })
    }

    /// Streams the object at `key` into `writer` (flushed); returns its size.
    pub async fn copy_to<W: AsyncWrite + Unpin + Send>(
        &self,
        key: &str,
        writer: &mut W,
    ) -> Result<u64, StorageError> {
        let mut stream = self.get(key).await?;
        let mut size = 0u64;
        let io = |source| StorageError::Io {
            key: key.to_string(),
            source,
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            writer.write_all(&chunk).await.map_err(io)?;
        }
        writer.flush().await.map_err(io)?;
        Ok(size)
    }

    /// The size of the object at `key`, or `None` when there is none.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self.store.head(&Path::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object whose key starts with the directory `prefix` (`users/{id}/state`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let prefix = Path::from(prefix);
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| ObjectInfo {
                key: meta.location.to_string(),
                size: meta.size,
            })
            .try_collect()
            .await
            .map_err(StorageError::from)
    }

    /// Deletes the object at `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
