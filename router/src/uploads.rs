//! Uploads: files users hand to their agent.
//!
//! A [`Batch`] is one `POST /api/files`: each file is streamed to storage at
//! `users/{id}/uploads/{file id}` (never whole in memory) while its size is
//! checked against the per-file limit and the plan's storage quota (`crate::quota`:
//! every stored byte of the user counts); only when
//! every file of the request arrived are the `files` rows written (`kind =
//! 'upload'`, `path = uploads/<safe name>`, a taken name numbered, the content
//! type sniffed from the bytes), in one transaction that re-checks the quota
//! under a per-user lock. A refused or cut-off batch deletes what it stored, so it
//! leaves no object and no row. The copy in the workspace (`uploads/<name>`) is
//! made by [`copy_to_workspace`] right after, when the workspace's files are on
//! this machine; otherwise the next wake's restore brings it.
//!
//! The HTTP side (multipart, status codes) is `http::files`; the safe names are
//! [`names`]; writing and removing workspace copies is [`workspace`].

use bytes::Bytes;
use futures::Stream;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    db,
    storage::{Refusal, Storage, StorageError},
    workspaces::Registry,
};

/// Safe file names for `uploads/`.
pub mod names;
/// The copy of an upload in a workspace directory on this machine.
pub mod workspace;

/// The workspace directory uploads go to.
pub const DIR: &str = "uploads";

/// Most files in one request.
pub const MAX_FILES_PER_REQUEST: usize = 32;

/// Most numbered variants tried for a taken name.
const MAX_NAME_TRIES: u32 = 1000;

/// The object key of upload `id` of `user`.
pub fn upload_key(user: Uuid, id: Uuid) -> String {
    format!("users/{user}/uploads/{id}")
}

/// Why an upload was refused. Nothing of the batch is kept.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The file name is not acceptable.
    #[error("{0}")]
    Name(#[from] names::NameError),
    /// A file is larger than `JARVIS_MAX_UPLOAD_BYTES`.
    #[error("files may be at most {limit} bytes; {name:?} is larger")]
    TooLarge {
        /// The file's name as sent.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// The object store refused the file for its size (its own or the bucket's
    /// size limit), below `JARVIS_MAX_UPLOAD_BYTES`.
    #[error("the file store does not take a file as large as {name:?}")]
    StoreTooLarge {
        /// The file's name as sent.
        name: String,
    },
    /// The plan's storage quota would be exceeded.
    #[error(
        "your plan keeps at most {quota} bytes of files and this upload does not fit; delete some files or change plan"
    )]
    Quota {
        /// The quota in bytes.
        quota: u64,
    },
    /// More files than [`MAX_FILES_PER_REQUEST`].
    #[error("at most {MAX_FILES_PER_REQUEST} files per request")]
    TooMany,
    /// The body ended or failed before a file was complete.
    #[error("the upload was cut off before it was complete")]
    Cut(#[source] std::io::Error),
    /// No free name was found after many tries.
    #[error("too many files are named like {0:?}")]
    NoFreeName(String),
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Storage failed.
    #[error("storage error")]
    Storage(#[source] StorageError),
}

impl From<crate::quota::QuotaError> for UploadError {
    fn from(e: crate::quota::QuotaError) -> Self {
        match e {
            crate::quota::QuotaError::Db(e) => Self::Db(e),
            crate::quota::QuotaError::Storage(e) => Self::Storage(e),
        }
    }
}

/// An upload as the API shows it right after the request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Uploaded {
    /// The `files` row.
    pub id: Uuid,
    /// The safe name (the last part of `path`).
    pub filename: String,
    /// `uploads/<filename>`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Sniffed from the bytes.
    pub content_type: String,
    /// Always `upload`.
    pub kind: &'static str,
    /// Storage key (not shown).
    #[serde(skip)]
    key: String,
}

/// A file stored, its row not yet written.
struct Pending {
    id: Uuid,
    key: String,
    name: String,
    size: u64,
    sha256: [u8; 32],
    content_type: String,
}

/// One request's files (see the module docs).
pub struct Batch {
    storage: Storage,
    db: PgPool,
    user: Uuid,
    max_file_bytes: u64,
    quota: Option<u64>,
    /// Bytes the user's files took when the batch began.
    used: u64,
    pending: Vec<Pending>,
}

impl Batch {
    /// Starts a batch for `user` under their plan's `quota` (bytes, `None` unlimited).
    pub async fn begin(
        storage: Storage,
        db: PgPool,
        user: Uuid,
        max_file_bytes: u64,
        quota: Option<u64>,
    ) -> Result<Self, UploadError> {
        let used = if quota.is_some() {
            crate::quota::used(&db, &storage, user).await?.1
        } else {
            0
        };
        Ok(Self {
            storage,
            db,
            user,
            max_file_bytes,
            quota,
            used,
            pending: Vec::new(),
        })
    }

    fn pending_bytes(&self) -> u64 {
        self.pending.iter().map(|p| p.size).sum()
    }

    /// Streams one file (named `raw_name` by the client) to storage. The name is
    /// checked before a byte is stored; the size while the bytes arrive.
    pub async fn add<S, E>(&mut self, raw_name: &str, body: S) -> Result<(), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<std::io::Error>,
    {
        if self.pending.len() >= MAX_FILES_PER_REQUEST {
            return Err(UploadError::TooMany);
        }
        let name = names::safe_name(raw_name)?;
        let room = self
            .quota
            .map(|q| q.saturating_sub(self.used + self.pending_bytes()));
        let limit = match room {
            Some(room) => room.min(self.max_file_bytes),
            None => self.max_file_bytes,
        };
        let id = Uuid::new_v4();
        let key = upload_key(self.user, id);
        let chunks = futures::StreamExt::map(body, |r| r.map_err(Into::into));
        let info = match self
            .storage
            .put_stream_as(&key, &name, chunks, Some(limit))
            .await
        {
            Ok(info) => info,
            Err(StorageError::TooLarge { .. }) => {
                return Err(match (room, self.quota) {
                    (Some(room), Some(quota)) if room < self.max_file_bytes => {
                        UploadError::Quota { quota }
                    }
                    _ => UploadError::TooLarge {
                        name: raw_name.to_string(),
                        limit: self.max_file_bytes,
                    },
                });
            }
            Err(StorageError::Io { source, .. }) => return Err(UploadError::Cut(source)),
            Err(e) if e.refusal() == Some(Refusal::TooLarge) => {
                return Err(UploadError::StoreTooLarge {
                    name: raw_name.to_string(),
                });
            }
            Err(e) => return Err(UploadError::Storage(e)),
        };
        let content_type = crate::sync::content_type(&info.head, &name);
        self.pending.push(Pending {
            id,
            key,
            name,
            size: info.size,
            sha256: info.sha256,
            content_type,
        });
        Ok(())
    }

    /// Whether no file was added.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Writes the rows (names made unique, quota re-checked under a per-user
    /// lock) and returns the files. On failure everything stored is deleted.
    pub async fn commit(
        self,
        taken_on_disk: impl Fn(&str) -> bool,
    ) -> Result<Vec<Uploaded>, UploadError> {
        match self.write_rows(&taken_on_disk).await {
            Ok(files) => Ok(files),
            Err(e) => {
                self.discard().await;
                Err(e)
            }
        }
    }

    async fn write_rows(
        &self,
        taken_on_disk: &impl Fn(&str) -> bool,
    ) -> Result<Vec<Uploaded>, UploadError> {
        let mut tx = db::user_tx(&self.db, self.user).await?;
        // One upload batch of a user at a time past this point, across router
        // processes: the quota check and the name choice see every earlier one.
        // language=PostgreSQL
        crate::db::query(
            "select pg_advisory_xact_lock(hashtextextended('uploads:' || $1::text, 0))",
        )
        .bind(self.user)
        .execute(&mut *tx)
        .await?;
        if let Some(quota) = self.quota {
            // Read after the lock: an earlier batch committed its rows before
            // releasing it, so they count.
            let (_, used) = crate::quota::used(&mut *tx, &self.storage, self.user).await?;
            if used + self.pending_bytes() > quota {
                return Err(UploadError::Quota { quota });
            }
        }
        let mut files = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            let mut chosen = None;
            for n in 0..MAX_NAME_TRIES {
                let name = names::numbered(&p.name, n);
                let path = format!("{DIR}/{name}");
                // language=PostgreSQL
                let in_db: bool = crate::db::query_scalar(
                    "select exists (select 1 from files where owner_id = $1 and path = $2)",
                )
                .bind(self.user)
                .bind(&path)
                .fetch_one(&mut *tx)
                .await?;
                if !in_db && !taken_on_disk(&path) {
                    chosen = Some((name, path));
                    break;
                }
            }
            let Some((filename, path)) = chosen else {
                return Err(UploadError::NoFreeName(p.name.clone()));
            };
            // language=PostgreSQL
            crate::db::query(
                "insert into files (id, owner_id, kind, path, storage_key, size, content_type, sha256)
                 values ($1, $2, 'upload', $3, $4, $5, $6, $7)",
            )
            .bind(p.id)
            .bind(self.user)
            .bind(&path)
            .bind(&p.key)
            .bind(i64::try_from(p.size).unwrap_or(i64::MAX))
            .bind(&p.content_type)
            .bind(p.sha256.as_slice())
            .execute(&mut *tx)
            .await?;
            files.push(Uploaded {
                id: p.id,
                filename,
                path,
                size: p.size,
                content_type: p.content_type.clone(),
                kind: "upload",
                key: p.key.clone(),
            });
        }
        tx.commit().await?;
        Ok(files)
    }

    /// Deletes every object the batch stored (a refused or cut-off request).
    pub async fn discard(self) {
        for p in &self.pending {
            if let Err(error) = self.storage.delete(&p.key).await {
                tracing::error!(user.id = %self.user, %error, "an unwanted upload could not be deleted");
            }
        }
    }
}

/// Copies fresh uploads into `user`'s workspace when its files are on this
/// machine (see [`Registry::with_workspace_dir`]). Best effort: a file that
/// cannot be copied now is still stored and comes with a restore.
pub async fn copy_to_workspace(
    registry: &Registry,
    storage: &Storage,
    user: Uuid,
    files: &[Uploaded],
) {
    registry
        .with_workspace_dir(user, |root, owner| async move {
            for file in files {
                match workspace::place(storage, &root, &file.path, &file.key, owner).await {
                    Ok(workspace::Placed::Written) => {}
                    Ok(workspace::Placed::Taken) => tracing::warn!(
                        user.id = %user,
                        "the agent wrote a file at an upload's path first; the copy was skipped"
                    ),
                    Err(error) => tracing::warn!(
                        user.id = %user,
                        error = %error,
                        "an upload could not be copied into the workspace"
                    ),
                }
            }
        })
        .await;
}

/// An upload named by a message: what the agent is told and the browser shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Attachment {
    /// The file's id.
    pub id: Uuid,
    /// Its name.
    pub filename: String,
    /// Its path in the workspace (`uploads/…`).
    pub path: String,
}

/// The uploads of `user` with these ids, in the order given; `Err` with the
/// first id that is not one of their uploads (malformed, missing or another
/// user's, which are not told apart).
pub async fn attachments(
    db: &PgPool,
    user: Uuid,
    ids: &[String],
) -> Result<Vec<Attachment>, AttachmentError> {
    let mut parsed = Vec::with_capacity(ids.len());
    for id in ids {
        match id.parse::<Uuid>() {
            Ok(u) if !parsed.contains(&u) => parsed.push(u),
            Ok(_) => {}
            Err(_) => return Err(AttachmentError::NotFound(id.clone())),
        }
    }
    if parsed.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db::user_tx(db, user).await?;
    // language=PostgreSQL
    let found: Vec<Attachment> = crate::db::query_as(
        "select id, regexp_replace(path, '^.*/', '') as filename, path from files
         where owner_id = $1 and kind = 'upload' and id = any($2)",
    )
    .bind(user)
    .bind(&parsed)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    parsed
        .iter()
        .map(|id| {
            found
                .iter()
                .find(|a| a.id == *id)
                .cloned()
                .ok_or_else(|| AttachmentError::NotFound(id.to_string()))
        })
        .collect()
}

/// Why a message's attachments were refused.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    /// Not one of the user's uploads.
    #[error("attachment {0} is not one of your uploads")]
    NotFound(String),
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}
