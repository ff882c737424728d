//! Workspace files ⇄ objects at [`workspace_key`] and `files` rows.

use std::{
    collections::HashMap,
    io::{Read, Seek},
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::{StreamExt, TryStreamExt, stream};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    Limits, RestoreReport, Result, SyncError, SyncReport, canonical_dir, content_type, paths,
    walk::{self, Found},
    workspace_key,
};
use crate::{
    db,
    storage::{Storage, StorageError},
};

/// Files uploaded or downloaded at once.
const CONCURRENCY: usize = 4;

/// What is stored of one path.
struct Stored {
    size: i64,
    sha256: Option<Vec<u8>>,
}

/// What happened to one file.
enum Outcome {
    Uploaded(u64),
    Unchanged,
    /// Identical to the user's upload at the same path: that row covers it.
    SameAsUpload,
    Skipped,
    /// Does not fit in the plan's storage.
    OverQuota,
    /// The store did not take it (refused or failed): the stored version, if
    /// any, is kept and the next sync tries again.
    Refused,
}

/// [`save_workspace_with`] the default [`Limits`].
pub async fn save_workspace(
    storage: &Storage,
    db: &PgPool,
    user_id: Uuid,
    workspace_dir: &Path,
) -> Result<SyncReport> {
    save_workspace_with(storage, db, user_id, workspace_dir, &Limits::default()).await
}

/// Stores the files of `workspace_dir` for `user_id`: new and changed ones are
/// uploaded, rows of vanished ones deleted with their objects (see the module docs).
#[tracing::instrument(skip(storage, db, workspace_dir, limits), fields(user.id = %user_id))]
pub async fn save_workspace_with(
    storage: &Storage,
    db: &PgPool,
    user_id: Uuid,
    workspace_dir: &Path,
    limits: &Limits,
) -> Result<SyncReport> {
    let io = |source| SyncError::Io {
        path: workspace_dir.to_path_buf(),
        source,
    };
    let root = Arc::new(paths::Beneath::open(workspace_dir).map_err(io)?);
    let walk = {
        let (root, limits) = (root.clone(), limits.clone());
        tokio::task::spawn_blocking(move || walk::walk(&root, &limits))
            .await?
            .map_err(io)?
    };
    let (stored, uploads) = stored_rows(db, user_id).await?;
    let ctx = Arc::new(Ctx {
        storage: storage.clone(),
        db: db.clone(),
        user_id,
        root: root.clone(),
        max_file_bytes: limits.max_file_bytes,
        room: limits.room.map(std::sync::Mutex::new),
        stored,
        uploads,
    });
    let outcomes: Vec<(String, Outcome)> = stream::iter(walk.files)
        .map(|found| {
            let ctx = ctx.clone();
            async move {
                let path = found.path.clone();
                sync_one(&ctx, found).await.map(|o| (path, o))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;

    let mut report = SyncReport {
        skipped: walk.skipped,
        truncated: walk.over_quota.is_some(),
        workspace_quota: walk.over_quota,
        ..SyncReport::default()
    };
    let truncated = walk.over_quota.is_some();
    let mut kept = std::collections::HashSet::new();
    for (path, outcome) in outcomes {
        match outcome {
            Outcome::Uploaded(bytes) => {
                report.uploaded += 1;
                report.bytes += bytes;
                kept.insert(path);
            }
            Outcome::Unchanged => {
                report.unchanged += 1;
                kept.insert(path);
            }
            Outcome::SameAsUpload => {}
            Outcome::Skipped => {
                report.skipped += 1;
                // Unreadable now is not gone: keep what was stored.
                kept.insert(path);
            }
            Outcome::OverQuota => {
                report.over_quota += 1;
                kept.insert(path);
            }
            Outcome::Refused => {
                report.refused += 1;
                kept.insert(path);
            }
        }
    }
    for path in ctx.stored.keys() {
        if kept.contains(path) {
            continue;
        }
        // Past a cap, files not seen may still exist: only delete what is gone.
        if truncated && !gone(&root, path) {
            continue;
        }
        delete_workspace_file(storage, db, user_id, path).await?;
        report.deleted += 1;
    }
    tracing::info!(
        uploaded = report.uploaded,
        unchanged = report.unchanged,
        deleted = report.deleted,
        skipped = report.skipped,
        truncated = report.truncated,
        bytes = report.bytes,
        over_quota = report.over_quota,
        refused = report.refused,
        "workspace saved"
    );
    if report.refused > 0 {
        tracing::warn!(
            files = report.refused,
            "workspace files not stored: the store did not take them"
        );
    }
    if report.over_quota > 0 {
        tracing::warn!(
            files = report.over_quota,
            "workspace files not stored: the plan's storage is full"
        );
    }
    Ok(report)
}

/// Whether nothing is at `path` under `root` any more (an error is not "gone").
fn gone(root: &paths::Beneath, path: &str) -> bool {
    paths::relative(path).is_some_and(|rel| matches!(root.stat(&rel), Ok(None)))
}

struct Ctx {
    storage: Storage,
    db: PgPool,
    user_id: Uuid,
    root: Arc<paths::Beneath>,
    max_file_bytes: u64,
    /// What the plan still holds, spent as files are stored.
    room: Option<std::sync::Mutex<crate::quota::Room>>,
    stored: HashMap<String, Stored>,
    uploads: HashMap<String, Stored>,
}

impl Ctx {
    /// Takes room for `size` bytes replacing `replacing`; `false` when they do
    /// not fit (nothing taken).
    fn reserve(&self, size: u64, replacing: u64) -> bool {
        let Some(room) = &self.room else {
            return true;
        };
        let mut room = room.lock().unwrap_or_else(|e| e.into_inner());
        if !room.fits(size, replacing) {
            return false;
        }
        room.used = room.used.saturating_sub(replacing).saturating_add(size);
        true
    }
}

type Rows = HashMap<String, Stored>;

async fn stored_rows(db: &PgPool, user_id: Uuid) -> Result<(Rows, Rows)> {
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let rows: Vec<(String, String, i64, Option<Vec<u8>>)> = crate::db::query_as(
        "select kind, path, size, sha256 from files
         where owner_id = $1 and kind in ('workspace', 'upload')",
    )
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let (mut stored, mut uploads) = (HashMap::new(), HashMap::new());
    for (kind, path, size, sha256) in rows {
        let map = if kind == "upload" {
            &mut uploads
        } else {
            &mut stored
        };
        map.insert(path, Stored { size, sha256 });
    }
    Ok((stored, uploads))
}

fn same(row: Option<&Stored>, size: u64, sha: &[u8; 32]) -> bool {
    row.is_some_and(|r| r.size as u64 == size && r.sha256.as_deref() == Some(sha.as_slice()))
}

async fn sync_one(ctx: &Ctx, found: Found) -> Result<Outcome> {
    let Some(rel) = paths::relative(&found.path) else {
        return Ok(Outcome::Skipped);
    };
    let stored = ctx.stored.get(&found.path);
    let upload = ctx.uploads.get(&found.path);
    let size_matches = |r: Option<&Stored>| r.is_some_and(|r| r.size as u64 == found.size);
    let need_hash = size_matches(stored) || size_matches(upload);
    let root = ctx.root.clone();
    let opened = tokio::task::spawn_blocking(move || {
        // Non-blocking and regular files only: a FIFO swapped in is refused at
        // once instead of holding this thread (and the user's sync lock).
        let (mut file, meta) = root.open_file(&rel)?;
        let size = meta.len();
        let sha = if need_hash {
            let mut hasher = Sha256::new();
            std::io::copy(&mut (&mut file).take(size), &mut hasher)?;
            file.rewind()?;
            Some(<[u8; 32]>::from(hasher.finalize()))
        } else {
            None
        };
        Ok::<_, std::io::Error>((file, size, sha))
    })
    .await?;
    let (file, size, sha) = match opened {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "workspace file not readable; skipped");
            return Ok(Outcome::Skipped);
        }
    };
    if size > ctx.max_file_bytes {
        return Ok(Outcome::Skipped);
    }
    if let Some(sha) = &sha {
        if same(stored, size, sha) {
            return Ok(Outcome::Unchanged);
        }
        if same(upload, size, sha) {
            return Ok(Outcome::SameAsUpload);
        }
    }
    let replacing = stored.map_or(0, |r| u64::try_from(r.size).unwrap_or(0));
    if !ctx.reserve(size, replacing) {
        return Ok(Outcome::OverQuota);
    }
    // Under a quota the file may not grow past what was reserved for it.
    let cap = if ctx.room.is_some() {
        size
    } else {
        ctx.max_file_bytes
    };
    let key = workspace_key(ctx.user_id, &found.path);
    let file = tokio::fs::File::from_std(file);
    let info = match ctx
        .storage
        .put_reader_as(&key, &found.path, file, Some(cap))
        .await
    {
        Ok(info) => info,
        // The file grew past the cap or could not be read while it streamed.
        Err(StorageError::TooLarge { .. } | StorageError::Io { .. }) => {
            return Ok(Outcome::Skipped);
        }
        // One object the store refuses does not stop the others (counted on
        // `/metrics` by the storage layer).
        Err(error) => {
            let refusal = error.refusal().map(|r| r.label());
            tracing::warn!(path = %found.path, ?refusal, %error, "the store did not take a workspace file");
            return Ok(Outcome::Refused);
        }
    };
    upsert_row(&ctx.storage, &ctx.db, ctx.user_id, &found.path, &key, &info).await?;
    Ok(Outcome::Uploaded(info.size))
}

/// Writes (or replaces) the `workspace` row of `path` for an object just stored
/// at `key`: the one place that decides a workspace file's row and content type.
/// A row stored under another key (a router before keys were spelled for every
/// store named it by its raw path) loses that object once the row points here.
async fn upsert_row(
    storage: &Storage,
    db: &PgPool,
    user_id: Uuid,
    path: &str,
    key: &str,
    info: &crate::storage::PutInfo,
) -> Result<()> {
    let content_type = content_type(&info.head, path);
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let previous: Option<String> = crate::db::query_scalar(
        "select storage_key from files
         where owner_id = $1 and kind = 'workspace' and path = $2 for update",
    )
    .bind(user_id)
    .bind(path)
    .fetch_optional(&mut *tx)
    .await?;
    // language=PostgreSQL
    crate::db::query(
        "insert into files (owner_id, kind, path, storage_key, size, content_type, sha256)
         values ($1, 'workspace', $2, $3, $4, $5, $6)
         on conflict (owner_id, kind, path) do update set storage_key = excluded.storage_key,
             size = excluded.size, content_type = excluded.content_type, sha256 = excluded.sha256",
    )
    .bind(user_id)
    .bind(path)
    .bind(key)
    .bind(i64::try_from(info.size).unwrap_or(i64::MAX))
    .bind(&content_type)
    .bind(info.sha256.as_slice())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Some(old) = previous.filter(|old| old != key) {
        // Left behind, it is only storage the user pays for: log and go on.
        if let Err(error) = storage.delete(&old).await {
            tracing::warn!(key = %old, %error, "an object under a workspace file's old key stays");
        }
    }
    Ok(())
}

/// Whether `path` may be stored as a workspace file: a safe relative path
/// ([`paths::relative`]) with no component that is never synced ([`super::IGNORED`]).
pub fn storable_path(path: &str) -> bool {
    paths::relative(path).is_some()
        && path
            .split('/')
            .all(|part| !walk::ignored(part) && !part.starts_with(paths::TEMP_PREFIX))
}

/// What [`save_workspace_file`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSaved {
    /// Stored as the `workspace` file at its path (this many bytes).
    Stored(u64),
    /// Identical to the user's upload at the same path: that upload's row covers
    /// it, and a `workspace` row of the path is removed (as [`save_workspace`] does).
    SameAsUpload,
}

/// Stores one workspace file of `user_id` at `path` from `reader` (at most
/// `limits.max_file_bytes`, else [`StorageError::TooLarge`] and nothing changes;
/// past `limits.room`, [`SyncError::OverQuota`] and nothing changes), exactly as
/// [`save_workspace`] stores a changed file. `path` must pass [`storable_path`]
/// (else [`SyncError::BadPath`]).
#[tracing::instrument(skip(storage, db, reader, limits), fields(user.id = %user_id))]
pub async fn save_workspace_file<R: tokio::io::AsyncRead + Unpin + Send>(
    storage: &Storage,
    db: &PgPool,
    user_id: Uuid,
    path: &str,
    reader: R,
    limits: &Limits,
) -> Result<FileSaved> {
    if !storable_path(path) {
        return Err(SyncError::BadPath(path.chars().take(200).collect()));
    }
    // The plan's room (plus what this path's stored version frees) caps the body
    // when it is below the per-file cap.
    let mut max_bytes = limits.max_file_bytes;
    let mut capped_by = None;
    if let Some(room) = limits.room
        && let Some(left) = room.left()
    {
        let replacing = workspace_row_size(db, user_id, path).await?;
        let fits = left.saturating_add(replacing);
        if fits < max_bytes {
            max_bytes = fits;
            capped_by = Some(room);
        }
    }
    let key = workspace_key(user_id, path);
    // A refused body stores nothing: the stored version stays as it was.
    let info = match (
        storage
            .put_reader_as(&key, path, reader, Some(max_bytes))
            .await,
        capped_by,
    ) {
        (Ok(info), _) => info,
        (Err(StorageError::TooLarge { .. }), Some(room)) => {
            return Err(SyncError::OverQuota(room));
        }
        (Err(e), _) => return Err(e.into()),
    };
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let upload: Option<(i64, Option<Vec<u8>>)> = crate::db::query_as(
        "select size, sha256 from files where owner_id = $1 and kind = 'upload' and path = $2",
    )
    .bind(user_id)
    .bind(path)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let upload = upload.map(|(size, sha256)| Stored { size, sha256 });
    if same(upload.as_ref(), info.size, &info.sha256) {
        delete_workspace_file(storage, db, user_id, path).await?;
        // The object may have been written without a row: it goes too.
        storage.delete(&key).await?;
        return Ok(FileSaved::SameAsUpload);
    }
    upsert_row(storage, db, user_id, path, &key, &info).await?;
    Ok(FileSaved::Stored(info.size))
}

/// The size of `user_id`'s `workspace` file at `path`; 0 when there is none.
async fn workspace_row_size(db: &PgPool, user_id: Uuid, path: &str) -> Result<u64> {
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let size: Option<i64> = crate::db::query_scalar(
        "select size from files where owner_id = $1 and kind = 'workspace' and path = $2",
    )
    .bind(user_id)
    .bind(path)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
}

/// Removes `user_id`'s `workspace` file at `path` (row and object); `false` when
/// there was none. Uploads are never touched.
pub async fn delete_workspace_file(
    storage: &Storage,
    db: &PgPool,
    user_id: Uuid,
    path: &str,
) -> Result<bool> {
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let key: Option<String> = crate::db::query_scalar(
        "delete from files where owner_id = $1 and kind = 'workspace' and path = $2
         returning storage_key",
    )
    .bind(user_id)
    .bind(path)
    .fetch_optional(&mut *tx)
    .await?;
    let found = key.is_some();
    if let Some(key) = key {
        // The row goes only if the object went: never a row pointing at nothing.
        storage.delete(&key).await?;
    }
    tx.commit().await?;
    Ok(found)
}

/// One file a restore brings back (see [`stored_files`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoredFile {
    /// Its workspace path.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// The hex SHA-256 of its bytes, when known.
    pub sha256: Option<String>,
    /// `workspace` or `upload`.
    pub kind: String,
    /// Its object key (never shown to a sandbox).
    #[serde(skip)]
    pub storage_key: String,
}

/// What a restore brings back for `user_id`: every `workspace` and `upload` file,
/// one per path (the newer row wins), in path order. Rows with unsafe paths are
/// left out.
pub async fn stored_files(db: &PgPool, user_id: Uuid) -> Result<Vec<StoredFile>> {
    let mut files = newest_rows(db, user_id).await?;
    files.retain(|f| {
        let ok = paths::relative(&f.path).is_some();
        if !ok {
            tracing::warn!("stored workspace path refused");
        }
        ok
    });
    Ok(files)
}

/// The stored file a restore brings back at `path` (see [`stored_files`]).
pub async fn stored_file(db: &PgPool, user_id: Uuid, path: &str) -> Result<Option<StoredFile>> {
    if paths::relative(path).is_none() {
        return Ok(None);
    }
    Ok(newest_rows_at(db, user_id, Some(path)).await?.pop())
}

/// The newest `workspace` or `upload` row of each path, unsafe paths included.
async fn newest_rows(db: &PgPool, user_id: Uuid) -> Result<Vec<StoredFile>> {
    newest_rows_at(db, user_id, None).await
}

/// [`newest_rows`], of one path only when `path` is given.
async fn newest_rows_at(db: &PgPool, user_id: Uuid, path: Option<&str>) -> Result<Vec<StoredFile>> {
    let mut tx = db::user_tx(db, user_id).await?;
    type Row = (String, i64, Option<Vec<u8>>, String, String);
    // language=PostgreSQL
    let rows: Vec<Row> = crate::db::query_as(
        "select distinct on (path) path, size, sha256, kind, storage_key from files
         where owner_id = $1 and kind in ('workspace', 'upload')
             and ($2::text is null or path = $2)
         order by path, updated_at desc, kind desc",
    )
    .bind(user_id)
    .bind(path)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(path, size, sha256, kind, storage_key)| StoredFile {
            path,
            size: u64::try_from(size).unwrap_or(0),
            sha256: sha256.map(hex::encode),
            kind,
            storage_key,
        })
        .collect())
}

/// Writes every stored `workspace` and `upload` file of `user_id` into
/// `workspace_dir` (created if missing) at its path; for a path stored as both,
/// the newer row wins. Rows with unsafe paths or missing objects are skipped.
#[tracing::instrument(skip(storage, db, workspace_dir), fields(user.id = %user_id))]
pub async fn restore_workspace(
    storage: &Storage,
    db: &PgPool,
    user_id: Uuid,
    workspace_dir: &Path,
) -> Result<RestoreReport> {
    let root = canonical_dir(workspace_dir)?;
    let root = Arc::new(
        paths::Beneath::open(&root).map_err(|source| SyncError::Io { path: root, source })?,
    );
    let rows = newest_rows(db, user_id).await?;
    let results: Vec<bool> = stream::iter(rows)
        .map(|file| {
            let root = root.clone();
            async move { restore_one(storage, root, &file.path, &file.storage_key).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let files = results.iter().filter(|ok| **ok).count() as u64;
    let report = RestoreReport {
        files,
        skipped: results.len() as u64 - files,
        state_files: 0,
    };
    tracing::info!(
        files = report.files,
        skipped = report.skipped,
        "workspace restored"
    );
    Ok(report)
}

/// Restores one file; `false` when it was skipped.
async fn restore_one(
    storage: &Storage,
    root: Arc<paths::Beneath>,
    path: &str,
    key: &str,
) -> Result<bool> {
    let Some(rel) = paths::relative(path) else {
        tracing::warn!("stored workspace path refused");
        return Ok(false);
    };
    let pending = match tokio::task::spawn_blocking(move || root.create(&rel, None)).await? {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "a workspace file could not be placed; skipped");
            return Ok(false);
        }
    };
    let file = pending.file.try_clone().map_err(|source| SyncError::Io {
        path: PathBuf::from(path),
        source,
    });
    let copied = match file {
        Ok(file) => {
            let mut file = tokio::fs::File::from_std(file);
            storage.copy_to(key, &mut file).await
        }
        Err(e) => {
            pending.discard();
            return Err(e);
        }
    };
    match copied {
        Ok(_) => {
            if let Err(e) = tokio::task::spawn_blocking(move || pending.commit()).await? {
                tracing::warn!(error = %e, "a workspace file could not be placed; skipped");
                return Ok(false);
            }
            Ok(true)
        }
        Err(StorageError::NotFound(_)) => {
            pending.discard();
            tracing::warn!("a stored workspace file has no object; skipped");
            Ok(false)
        }
        Err(e) => {
            pending.discard();
            Err(e.into())
        }
    }
}
