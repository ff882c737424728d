//! Object storage for the files users and agents produce: a local directory
//! (`file:DIR`, the default) or any S3 API (`s3://BUCKET`, e.g. Supabase Storage).
//!
//! Keys are always `users/{user id}/…`, built by the caller from ids the router
//! owns, never from a client's path.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::{
    ObjectStore, PutPayload, aws::AmazonS3Builder, local::LocalFileSystem, path::Path,
};

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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
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

    /// Deletes the object at `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
