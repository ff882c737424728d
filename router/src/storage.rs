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
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::ReaderStream;

/// Bytes kept from the start of a streamed object for content sniffing.
pub const HEAD_BYTES: usize = 8192;

/// Part size of streamed (multipart) uploads: S3's smallest allowed part.
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Bytes read from a reader at a time ([`Storage::put_reader`]).
const READ_BYTES: usize = 64 * 1024;
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

/// One part of an object: the source's chunks as they came (the last one split
/// where the part ends).
struct Part {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Part {
    /// Its first bytes (at most [`HEAD_BYTES`]), for sniffing.
    fn head(&self) -> Bytes {
        match self.chunks.first() {
            Some(chunk) if chunk.len() >= HEAD_BYTES || self.chunks.len() == 1 => {
                chunk.slice(..chunk.len().min(HEAD_BYTES))
            }
            _ => {
                let mut head = Vec::with_capacity(HEAD_BYTES);
                for chunk in &self.chunks {
                    let want = (HEAD_BYTES - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..want]);
                    if head.len() == HEAD_BYTES {
                        break;
                    }
                }
                Bytes::from(head)
            }
        }
    }
}

/// A source cut into parts of [`PART_BYTES`] (the last shorter), its size
/// counted and held to the limit as the chunks arrive.
struct Parts<'k, S> {
    source: S,
    key: &'k str,
    limit: Option<u64>,
    /// What the last chunk had past the end of the previous part.
    rest: Option<Bytes>,
    /// Bytes read so far.
    size: u64,
    /// The source ended.
    ended: bool,
}

impl<'k, S> Parts<'k, S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    fn new(source: S, key: &'k str, limit: Option<u64>) -> Self {
        Self {
            source,
            key,
            limit,
            rest: None,
            size: 0,
            ended: false,
        }
    }

    /// The next part: [`PART_BYTES`] long unless the source ended within it.
    async fn next(&mut self) -> Result<Part, StorageError> {
        let mut part = Part {
            chunks: Vec::new(),
            len: 0,
        };
        while part.len < PART_BYTES {
            let mut chunk = match self.rest.take() {
                Some(rest) => rest,
                None => match self.source.next().await {
                    Some(Ok(chunk)) => {
                        self.size += chunk.len() as u64;
                        check_limit(self.key, self.size, self.limit)?;
                        chunk
                    }
                    Some(Err(source)) => {
                        return Err(StorageError::Io {
                            key: self.key.to_string(),
                            source,
                        });
                    }
                    None => {
                        self.ended = true;
                        break;
                    }
                },
            };
            if chunk.is_empty() {
                continue;
            }
            let room = PART_BYTES - part.len;
            if chunk.len() > room {
                self.rest = Some(chunk.split_off(room));
            }
            part.len += chunk.len();
            part.chunks.push(chunk);
        }
        Ok(part)
    }
}

/// The SHA-256 of a multipart object, computed on a blocking thread of its own
/// from its parts in order, so hashing overlaps reading and writing. At most
/// [`PARTS_HASHED_BEHIND`] parts wait for it.
struct Hashing {
    parts: tokio::sync::mpsc::Sender<PutPayload>,
    task: tokio::task::JoinHandle<Sha256>,
}

/// Parts waiting to be hashed at most (they are shared with the parts being
/// written, so they hold little memory of their own).
const PARTS_HASHED_BEHIND: usize = 2;

impl Hashing {
    fn start() -> Self {
        let (parts, mut rx) = tokio::sync::mpsc::channel::<PutPayload>(PARTS_HASHED_BEHIND);
        let task = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(part) = rx.blocking_recv() {
                for chunk in &part {
                    hasher.update(chunk);
                }
            }
            hasher
        });
        Self { parts, task }
    }

    /// Hands the next part over; waits while the hasher is [`PARTS_HASHED_BEHIND`] behind.
    async fn add(&self, key: &str, part: &PutPayload) -> Result<(), StorageError> {
        self.parts
            .send(part.clone())
            .await
            .map_err(|_| hashing_failed(key, "the hashing thread ended early"))
    }

    /// The digest of every part handed over.
    async fn finish(self, key: &str) -> Result<[u8; 32], StorageError> {
        drop(self.parts);
        match self.task.await {
            Ok(hasher) => Ok(hasher.finalize().into()),
            Err(join) => Err(hashing_failed(key, &join.to_string())),
        }
    }
}

fn hashing_failed(key: &str, why: &str) -> StorageError {
    StorageError::Io {
        key: key.to_string(),
        source: std::io::Error::other(format!("hashing failed: {why}")),
    }
}

/// Sends `first` (a whole part) and then the rest of `parts` as the parts of
/// `upload`, in order, at most [`PARTS_IN_FLIGHT`] sent while the next is read,
/// each handed to `hashing` too. No part is still being sent when this
/// returns; a part the store refused is the error (counted), and the caller
/// aborts the upload.
async fn stream_parts<S>(
    upload: &mut dyn MultipartUpload,
    key: &str,
    first: Part,
    parts: &mut Parts<'_, S>,
    hashing: &Hashing,
) -> Result<(), StorageError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let mut in_flight = tokio::task::JoinSet::new();
    let result = async {
        let mut part = first;
        loop {
            if part.len > 0 {
                let payload = PutPayload::from_iter(part.chunks);
                hashing.add(key, &payload).await?;
                in_flight.spawn(upload.put_part(payload));
            }
            while in_flight.len() > PARTS_IN_FLIGHT || (parts.ended && !in_flight.is_empty()) {
                if let Some(answer) = in_flight.join_next().await {
                    part_answer(key, answer)?;
                }
            }
            if parts.ended {
                return Ok(());
            }
            part = parts.next().await?;
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
        reader: R,
        limit: Option<u64>,
    ) -> Result<PutInfo, StorageError> {
        let chunks = ReaderStream::with_capacity(reader, READ_BYTES);
        self.put_stream_as(key, name, chunks, limit).await
    }

    /// [`Storage::put_reader_as`] for a source that comes in chunks (an upload's
    /// body): the chunks go into the parts as they are, never copied, and the
    /// SHA-256 of a multipart object is computed on a thread of its own while the
    /// parts are read and written.
    pub async fn put_stream_as<S>(
        &self,
        key: &str,
        name: &str,
        source: S,
        limit: Option<u64>,
    ) -> Result<PutInfo, StorageError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin + Send,
    {
        let path = Path::from(key);
        let mut parts = Parts::new(source, key, limit);
        // The first part decides: a source that ends within it is one PUT.
        let first = parts.next().await?;
        let head = first.head();
        let attributes = self.attributes(&head, name);
        if parts.ended {
            let mut hasher = Sha256::new();
            for chunk in &first.chunks {
                hasher.update(chunk);
            }
            let opts = PutOptions {
                attributes,
                ..PutOptions::default()
            };
            let put = self
                .store
                .put_opts(&path, PutPayload::from_iter(first.chunks), opts)
                .await;
            counted(key, put)?;
            return Ok(PutInfo {
                size: parts.size,
                sha256: hasher.finalize().into(),
                head,
            });
        }
        let opts = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let mut upload = counted(key, self.store.put_multipart_opts(&path, opts).await)?;
        let hashing = Hashing::start();
        let streamed = stream_parts(upload.as_mut(), key, first, &mut parts, &hashing).await;
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
            size: parts.size,
            sha256: hashing.finish(key).await?,
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
