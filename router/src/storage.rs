//! Object storage for the files users and agents produce: a local directory
//! (`file:DIR`, the default) or any S3 API (`s3://BUCKET`, e.g. Supabase Storage).
//!
//! Keys are always `users/{user id}/…`, built by the caller from ids the router
//! owns; a name a user or the agent chose enters a key only through
//! [`keys::portable`], which every store takes as it is.

pub mod keys;

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::{
    Attribute, Attributes, MultipartUpload, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload,
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    local::LocalFileSystem,
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
    /// The bucket does not exist (a start-up or `/readyz` check).
    #[error("the storage bucket {0:?} does not exist: create it or fix JARVIS_STORAGE")]
    NoBucket(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

impl StorageError {
    /// Why the store refused a write or read, when it answered with a refusal
    /// (an HTTP 4xx) rather than failing; `None` for every other error.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::NoBucket(_) => Some(Refusal::NoBucket),
            Self::Store(e) => refusal_of(e),
            _ => None,
        }
    }
}

/// Why a store refused an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too large for the store or the bucket's size limit (`EntityTooLarge`, 413).
    TooLarge,
    /// The bucket does not exist (`NoSuchBucket`).
    NoBucket,
    /// The store does not accept the key (`InvalidKey`, Supabase's key rule).
    BadKey,
    /// Any other refusal (4xx): denied, a precondition, a bad request.
    Other,
}

impl Refusal {
    /// Its `/metrics` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NoBucket => "no_bucket",
            Self::BadKey => "bad_key",
            Self::Other => "refused",
        }
    }
}

/// Whether `error` or one of its sources says `needle`.
fn chain_contains(error: &(dyn std::error::Error + 'static), needle: &str) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.to_string().contains(needle) {
            return true;
        }
        next = e.source();
    }
    false
}

/// What kind of refusal the store's `error` is (see [`StorageError::refusal`]).
fn refusal_of(error: &object_store::Error) -> Option<Refusal> {
    let says = |needle| chain_contains(error, needle);
    if says("EntityTooLarge") || says("status code: 413") {
        Some(Refusal::TooLarge)
    } else if says("NoSuchBucket") {
        Some(Refusal::NoBucket)
    } else if says("InvalidKey") || says("KeyTooLong") || says("InvalidObjectName") {
        Some(Refusal::BadKey)
    } else if says("status code: 4")
        || matches!(
            error,
            object_store::Error::NotFound { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
        )
    {
        Some(Refusal::Other)
    } else {
        None
    }
}

/// `result` of a write to `key`, a failure logged and counted on `/metrics`
/// (`jarvis_storage_write_failures`, by refusal kind or `failed`).
fn counted<T>(key: &str, result: object_store::Result<T>) -> Result<T, StorageError> {
    result.map_err(|error| {
        let refusal = refusal_of(&error);
        let kind = refusal.map_or("failed", Refusal::label);
        crate::metrics::storage_write_failed(kind);
        tracing::warn!(key, kind, %error, "the store did not take an object");
        StorageError::Store(error)
    })
}

/// [`StorageError::TooLarge`] once `size` is past `limit`.
fn check_limit(key: &str, size: u64, limit: Option<u64>) -> Result<(), StorageError> {
    match limit {
        Some(limit) if size > limit => Err(StorageError::TooLarge {
            key: key.to_string(),
            limit,
        }),
        _ => Ok(()),
    }
}

/// Reads from `reader` into `buf` until it holds `max` bytes or the source
/// ends; `true` when it ended.
async fn read_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    let mut chunk = vec![0u8; 64 * 1024];
    while buf.len() < max {
        let want = (max - buf.len()).min(chunk.len());
        let n = reader.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(true);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(false)
}

/// Sends `first` (a whole part) and then the rest of `reader` as the parts of
/// `upload`, in order, [`PART_BYTES`] each (the last shorter), at most
/// [`PARTS_IN_FLIGHT`] sent while the next is read; `seen` is shown every chunk
/// read after `first` and stops the stream with its error. No part is still
/// being sent when this returns; a part the store refused is the error
/// (counted), and the caller aborts the upload.
async fn stream_parts<R: AsyncRead + Unpin>(
    upload: &mut dyn MultipartUpload,
    key: &str,
    first: Vec<u8>,
    reader: &mut R,
    mut seen: impl FnMut(&[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let io = |source| StorageError::Io {
        key: key.to_string(),
        source,
    };
    let mut in_flight = tokio::task::JoinSet::new();
    in_flight.spawn(upload.put_part(PutPayload::from(first)));
    let mut part = Vec::with_capacity(PART_BYTES);
    let mut chunk = vec![0u8; 64 * 1024];
    let result = async {
        loop {
            let want = (PART_BYTES - part.len()).min(chunk.len());
            let n = reader.read(&mut chunk[..want]).await.map_err(io)?;
            seen(&chunk[..n])?;
            part.extend_from_slice(&chunk[..n]);
            let ended = n == 0;
            if part.len() == PART_BYTES || (ended && !part.is_empty()) {
                let full = std::mem::replace(&mut part, Vec::with_capacity(PART_BYTES));
                in_flight.spawn(upload.put_part(PutPayload::from(full)));
            }
            while in_flight.len() > PARTS_IN_FLIGHT || (ended && !in_flight.is_empty()) {
                if let Some(answer) = in_flight.join_next().await {
                    part_answer(key, answer)?;
                }
            }
            if ended {
                return Ok(());
            }
        }
    }
    .await;
    // On a failure the parts still being sent are stopped before the caller
    // aborts the upload.
    in_flight.shutdown().await;
    result
}

/// A part's answer (or its task's end) as a result, a refusal counted.
fn part_answer(
    key: &str,
    answer: Result<object_store::Result<()>, tokio::task::JoinError>,
) -> Result<(), StorageError> {
    match answer {
        Ok(answer) => counted(key, answer),
        Err(join) => Err(StorageError::Io {
            key: key.to_string(),
            source: std::io::Error::other(join),
        }),
    }
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
    /// The bucket, for an S3 store.
    bucket: Option<String>,
    /// Whether the store keeps objects' attributes (Content-Type): S3 does, a
    /// local directory does not.
    keeps_attributes: bool,
}

impl Storage {
    /// Opens the store named by a `JARVIS_STORAGE` value.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        let store: Arc<dyn ObjectStore> = if let Some(dir) = url.strip_prefix("file:") {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Dir {
                dir: dir.to_string(),
                source,
            })?;
            return Ok(Self {
                store: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
                bucket: None,
                keeps_attributes: false,
            });
        } else if let Some(bucket) = url.strip_prefix("s3://") {
            if bucket.is_empty() || bucket.contains('/') {
                return Err(StorageError::BadUrl(url.to_string()));
            }
            // Credentials, region and AWS_ENDPOINT_URL come from the standard AWS
            // variables; path-style addressing is what Supabase Storage speaks.
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_virtual_hosted_style_request(false);
            // An `http://` endpoint is what its operator asked for: no
            // AWS_ALLOW_HTTP needed on top (an explicit one still wins).
            let plain = builder
                .get_config_value(&AmazonS3ConfigKey::Endpoint)
                .is_some_and(|e| e.starts_with("http://"));
            if plain && std::env::var_os("AWS_ALLOW_HTTP").is_none() {
                builder = builder.with_allow_http(true);
            }
            Arc::new(builder.build()?)
        } else {
            return Err(StorageError::BadUrl(url.to_string()));
        };
        Ok(Self {
            store,
            bucket: url.strip_prefix("s3://").map(str::to_string),
            keeps_attributes: true,
        })
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
            bucket: Some(config.bucket.clone()),
            keeps_attributes: true,
        })
    }

    /// Stores `bytes` at `key`, replacing what was there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let opts = PutOptions {
            attributes: self.attributes(&bytes[..bytes.len().min(HEAD_BYTES)], key),
            ..PutOptions::default()
        };
        let put = self
            .store
            .put_opts(&Path::from(key), PutPayload::from(bytes), opts)
            .await;
        counted(key, put)?;
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
    /// with [`StorageError::TooLarge`]; so does any read error. The object's
    /// Content-Type (on stores that keep one) is sniffed from its first bytes and
    /// the key's name. A write the store refuses is an error, never a panic
    /// ([`StorageError::refusal`] tells why), and is counted on `/metrics`.
    pub async fn put_reader<R: AsyncRead + Unpin + Send>(
        &self,
        key: &str,
        reader: R,
        limit: Option<u64>,
    ) -> Result<PutInfo, StorageError> {
        self.put_reader_as(key, key, reader, limit).await
    }

    /// [`Storage::put_reader`], with the Content-Type guessed from `name` (the
    /// file's name as its owner knows it) rather than from the key.
    pub async fn put_reader_as<R: AsyncRead + Unpin + Send>(
        &self,
        key: &str,
        name: &str,
        mut reader: R,
        limit: Option<u64>,
    ) -> Result<PutInfo, StorageError> {
        let path = Path::from(key);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let io = |source| StorageError::Io {
            key: key.to_string(),
            source,
        };
        // The first part decides: a source that ends within it is one PUT.
        let mut first = Vec::with_capacity(64 * 1024);
        let ended = read_up_to(&mut reader, &mut first, PART_BYTES)
            .await
            .map_err(io)?;
        size += first.len() as u64;
        check_limit(key, size, limit)?;
        hasher.update(&first);
        let head = Bytes::copy_from_slice(&first[..first.len().min(HEAD_BYTES)]);
        let attributes = self.attributes(&head, name);
        if ended {
            let opts = PutOptions {
                attributes,
                ..PutOptions::default()
            };
            let put = self
                .store
                .put_opts(&path, PutPayload::from(first), opts)
                .await;
            counted(key, put)?;
            return Ok(PutInfo {
                size,
                sha256: hasher.finalize().into(),
                head,
            });
        }
        let opts = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let mut upload = counted(key, self.store.put_multipart_opts(&path, opts).await)?;
        let streamed = stream_parts(upload.as_mut(), key, first, &mut reader, |chunk| {
            size += chunk.len() as u64;
            check_limit(key, size, limit)?;
            hasher.update(chunk);
            Ok(())
        })
        .await;
        let done = match streamed {
            Ok(()) => counted(key, upload.complete().await).map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            // Whatever failed (a part, the completion, the source), the upload
            // begun is aborted: no unfinished upload keeps its parts.
            if let Err(abort) = upload.abort().await {
                tracing::warn!(key, error = %abort, "aborting an unfinished upload failed");
            }
            return Err(e);
        }
        Ok(PutInfo {
            size,
            sha256: hasher.finalize().into(),
            head,
        })
    }

    /// The attributes an object is stored with: its Content-Type, on stores that
    /// keep attributes (S3; a local directory keeps none).
    fn attributes(&self, head: &[u8], name: &str) -> Attributes {
        let mut attributes = Attributes::new();
        if self.keeps_attributes {
            attributes.insert(
                Attribute::ContentType,
                crate::sync::content_type(head, name).into(),
            );
        }
        attributes
    }

    /// Checks that the bucket exists and answers, for start-up and `/readyz`:
    /// a missing bucket is [`StorageError::NoBucket`], naming it.
    pub async fn check(&self) -> Result<(), StorageError> {
        let probe = Path::from("jarvis-readiness-probe");
        match self.store.list_with_delimiter(Some(&probe)).await {
            Ok(_) => Ok(()),
            Err(e) => match &self.bucket {
                Some(bucket)
                    if chain_contains(&e, "NoSuchBucket")
                        || matches!(e, object_store::Error::NotFound { .. }) =>
                {
                    Err(StorageError::NoBucket(bucket.clone()))
                }
                _ => Err(e.into()),
            },
        }
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
