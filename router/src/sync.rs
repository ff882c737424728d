//! What the agent produced in its sandbox ⇄ storage, under the owner's id.
//!
//! - [`save_workspace`]: the workspace directory → objects at
//!   [`workspace_key`] (`users/{id}/workspace/<path>`, spelled for every store)
//!   plus `files` rows (`kind = 'workspace'`, content type sniffed by
//!   [`content_type`]); new and changed files (size + SHA-256 against
//!   the row) are uploaded, vanished ones lose row and object. A file identical to
//!   an upload at the same path (`uploads/…`, issue 10) is left to that upload's row.
//! - [`save_state`]: the sandbox's state directory (the CLI's HOME: transcripts in
//!   `.claude/projects/…`, `jarvis/conversations/<id>.json`) → one gzipped tar at
//!   [`state_key`], replaced whole, so transcripts and seq files always come back
//!   from the same moment.
//! - [`restore`]: both back into fresh directories on wake: every `workspace` and
//!   `upload` row to its path (older first, so the newest version of a path wins),
//!   then the state archive. Files already there are overwritten, others left.
//!
//! - One file at a time, for sandboxes that do their own I/O through the router
//!   (pods): [`stored_files`] (what a restore brings), [`save_workspace_file`] and
//!   [`delete_workspace_file`] (one changed or removed file, stored exactly as
//!   [`save_workspace`] would), [`save_state_archive`] (a state archive the
//!   sandbox packed, checked before it replaces the stored one).
//!
//! What is synced: regular files only; symlinks are neither followed nor stored,
//! names in [`IGNORED`] (caches, dependency trees) are skipped, and
//! [`Limits`] caps file size, file count, total size and depth (see its defaults),
//! and, given the user's [`crate::quota::Room`], what the plan's storage holds:
//! a file that does not fit is not stored and is counted in `over_quota`.
//! A stored path never escapes its directory: `..`, absolute paths, NUL and control
//! characters are refused both ways, and files are opened without following
//! symlinks. Run [`restore`] before the sandbox starts and [`save_workspace`] /
//! [`save_state`] when it has stopped (or is idle): a running agent can change files
//! while they are read. This module does not decide when to sync.

mod content_type;
pub(crate) mod paths;
mod state;
mod walk;
mod workspace;

use std::path::PathBuf;

pub use content_type::content_type;
pub use state::{restore_state, save_state, save_state_archive, save_state_with};
pub use workspace::{
    FileSaved, StoredFile, delete_workspace_file, restore_workspace, save_workspace,
    save_workspace_file, save_workspace_with, storable_path, stored_file, stored_files,
};

use sqlx::PgPool;
use uuid::Uuid;

use crate::storage::{Storage, StorageError};

/// Directory and file names never synced (caches and dependency trees the agent
/// can rebuild); one list for the router's sync and the sandbox's own.
pub use sandbox::sync::IGNORED;

/// Caps on what one sync stores: the workspace quota (`JARVIS_WORKSPACE_MAX_FILES`,
/// `JARVIS_WORKSPACE_MAX_BYTES`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Larger files are skipped (default 100 MiB).
    pub max_file_bytes: u64,
    /// At most this many names in the workspace: files, directories, links
    /// (default 10 000).
    pub max_files: u64,
    /// At most this many bytes of files in all (default 1 GiB).
    pub max_total_bytes: u64,
    /// Directories nested deeper are skipped (default 32).
    pub max_depth: usize,
    /// The user's storage when the sync began (`crate::quota`): a new or changed
    /// file that does not fit in the plan is not stored (`over_quota`). `None`
    /// (the default) stores whatever the other caps allow.
    pub room: Option<crate::quota::Room>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 10_000,
            max_total_bytes: 1024 * 1024 * 1024,
            max_depth: 32,
            room: None,
        }
    }
}

/// Which workspace quota a sync ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// More names (files, directories, links) than [`Limits::max_files`].
    Files,
    /// More bytes of files than [`Limits::max_total_bytes`].
    Bytes,
}

impl QuotaExceeded {
    /// What the user is told: which quota, its size, and what it means for their files.
    pub fn message(self, limits: &Limits) -> String {
        let quota = match self {
            Self::Files => format!("{} files and folders", limits.max_files),
            Self::Bytes => format!("{} bytes", limits.max_total_bytes),
        };
        format!(
            "your workspace is over its quota of {quota}: files past it are not saved \
             (a workspace restored from storage will not have them); delete some files \
             to bring it under the quota"
        )
    }
}

/// Sync failures. A single unreadable or unstorable file is skipped and counted
/// in the report instead.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A directory could not be read or written.
    #[error("{path}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("a sync task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A path that may not be stored (see [`storable_path`]).
    #[error(
        "{0:?} is not a storable workspace path: it must be relative, `/`-separated, without `.` or `..` components, control characters, backslashes or ignored names ({IGNORED:?})"
    )]
    BadPath(String),
    /// A state archive that is not a gzipped tar of files and directories.
    #[error("the state archive is not a gzipped tar: {0}")]
    BadArchive(String),
    /// The storage quota could not be read; nothing was stored.
    #[error("the storage quota could not be read: {0}")]
    Quota(#[from] crate::quota::QuotaError),
    /// The plan's storage quota has no room for it; nothing was stored.
    #[error("{}", .0.full_message())]
    OverQuota(crate::quota::Room),
}

/// `Result` with [`SyncError`].
pub type Result<T, E = SyncError> = std::result::Result<T, E>;

/// What [`save_workspace`] or [`save_state`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Files stored (new or changed).
    pub uploaded: u64,
    /// Files already stored as they are.
    pub unchanged: u64,
    /// Stored files removed because they are gone from the directory.
    pub deleted: u64,
    /// Entries not stored: symlinks, special files, bad names, over the size cap,
    /// unreadable.
    pub skipped: u64,
    /// A count or total-size cap was hit; files past it were not stored (and
    /// stored ones not seen were kept).
    pub truncated: bool,
    /// The workspace quota that was hit, when [`SyncReport::truncated`].
    pub workspace_quota: Option<QuotaExceeded>,
    /// Bytes uploaded.
    pub bytes: u64,
    /// New or changed files not stored because the plan's storage is full (the
    /// stored version, if any, is kept).
    pub over_quota: u64,
    /// New or changed files the store did not take (refused: a size limit, a
    /// key it does not accept, a missing bucket; or failed): the stored version,
    /// if any, is kept, and the next sync tries again.
    pub refused: u64,
}

/// What [`restore`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Workspace files written.
    pub files: u64,
    /// Workspace rows not restored: bad path, missing object, a directory in the way.
    pub skipped: u64,
    /// Files written from the state archive.
    pub state_files: u64,
}

/// The object key of `user_id`'s workspace file at `path` (a [`storable_path`]):
/// spelled so that every store takes it ([`crate::storage::keys::portable`]);
/// the path itself is kept in the file's row.
pub fn workspace_key(user_id: Uuid, path: &str) -> String {
    crate::storage::keys::portable(&format!("users/{user_id}/workspace"), path)
}

/// The object key of `user_id`'s state archive.
pub fn state_key(user_id: Uuid) -> String {
    format!("users/{user_id}/state/state.tar.gz")
}

/// Brings a sleeping user's workspace files and agent state back into
/// `workspace_dir` and `state_dir` (created if missing).
pub async fn restore(
    storage: &Storage,
    db: &PgPool,
    user_id: Uuid,
    workspace_dir: &std::path::Path,
    state_dir: &std::path::Path,
) -> Result<RestoreReport> {
    let mut report = restore_workspace(storage, db, user_id, workspace_dir).await?;
    report.state_files = restore_state(storage, user_id, state_dir).await?;
    Ok(report)
}

/// Creates `dir` if needed and returns its canonical path.
fn canonical_dir(dir: &std::path::Path) -> Result<PathBuf> {
    let io = |source| SyncError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    dir.canonicalize().map_err(io)
}
