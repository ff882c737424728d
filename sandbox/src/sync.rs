//! Workspace files and agent state ⇄ the router, done by the sandbox itself
//! (`--sync router`: pods, whose disks the router cannot reach; the local backend
//! syncs from the host and leaves this off).
//!
//! - [`RouterSync::restore`], before the sandbox says it is ready: when the
//!   workspace directory is empty, every stored file (`GET /v1/workspace/files`,
//!   then each file's bytes) is written into it; when the state directory is
//!   empty, the state archive (`GET /v1/workspace/state`) is unpacked into it.
//! - [`RouterSync::push`], after each turn: files whose size or mtime changed since
//!   they were last pushed or restored (a [`Manifest`] kept in memory) are `PUT`,
//!   vanished ones `DELETE`d; then the state directory is packed and `PUT` whole.
//! - [`RouterSync::fetch`]: an upload a message names that is not in the
//!   workspace yet (uploaded while this sandbox was awake) is fetched first.
//!
//! The router decides what is stored where; this side walks the directories with
//! the same rules (regular files only, symlinks never followed, [`IGNORED`] names
//! skipped) and writes only through fresh temporary files renamed into checked
//! directories. Requests carry the workspace token, like the CLI's model calls.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Component, Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::TryStreamExt;
use reqwest::{StatusCode, Url};
use tokio::{io::AsyncWriteExt, sync::Mutex};

pub mod beneath;

use beneath::Beneath;

use crate::credentials::Credentials;

/// Directory and file names never synced (caches and dependency trees the agent
/// can rebuild). The router's sync uses the same list.
pub const IGNORED: &[&str] = &[
    ".cache",
    ".npm",
    ".venv",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
];

/// Names of this module's temporary files (never synced).
const TEMP_PREFIX: &str = ".jarvis-";

/// Most files synced from one directory.
const MAX_FILES: usize = 10_000;
/// Deepest directory synced.
const MAX_DEPTH: usize = 32;
/// Largest file synced (the router's per-file cap).
const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Sync failures.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The router could not be reached or answered with an error.
    #[error("the router: {0}")]
    Http(#[from] reqwest::Error),
    /// The router answered a status this side does not expect.
    #[error("the router answered {status} to {what}")]
    Status {
        /// What was asked.
        what: String,
        /// The answer.
        status: StatusCode,
    },
    /// A local file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The gateway URL cannot carry these paths.
    #[error("invalid gateway URL {0:?}")]
    BadUrl(String),
    /// A blocking task failed.
    #[error("a sync task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

type Result<T, E = SyncError> = std::result::Result<T, E>;

/// What a file looked like when it was last synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl Seen {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// Files by workspace path (relative, `/`-separated).
pub type Manifest = BTreeMap<String, Seen>;

/// What changed between two [`Manifest`]s.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// New files and files whose size or mtime differ, in path order.
    pub changed: Vec<String>,
    /// Files that are gone, in path order.
    pub removed: Vec<String>,
}

/// The files to push and to delete to get from `synced` to `now`.
pub fn changes(synced: &Manifest, now: &Manifest) -> Changes {
    Changes {
        changed: now
            .iter()
            .filter(|(path, seen)| synced.get(*path) != Some(seen))
            .map(|(path, _)| path.clone())
            .collect(),
        removed: synced
            .keys()
            .filter(|path| !now.contains_key(*path))
            .cloned()
            .collect(),
    }
}

/// Whether `path` is a safe relative path of synced names: no empty, `.` or `..`
/// component, no NUL, control character or backslash, no ignored name.
pub fn syncable(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1024
        && !path.starts_with('/')
        && path.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.len() <= 255
                && !part.chars().any(|c| c.is_control() || c == '\\')
                && !IGNORED.contains(&part)
                && !part.starts_with(TEMP_PREFIX)
        })
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The regular files under `root` (symlinks not followed, ignored names and this
/// module's temporary files skipped, at most [`MAX_FILES`], [`MAX_DEPTH`] deep,
/// none over [`MAX_FILE_BYTES`]), in name order. Blocking. A missing `root` has
/// no files.
pub fn scan(root: &Path) -> io::Result<Manifest> {
    scan_capped(root, MAX_FILES).map(|(files, _)| files)
}

/// [`scan`] with at most `max_files`; `true` when files were left out past it.
fn scan_capped(root: &Path, max_files: usize) -> io::Result<(Manifest, bool)> {
    let mut out = Manifest::new();
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        let mut entries: Vec<_> = match fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().collect(),
            Err(e) if dir == root && e.kind() == io::ErrorKind::NotFound => {
                return Ok((out, false));
            }
            Err(e) if dir == root => return Err(e),
            Err(_) => continue,
        };
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = format!("{prefix}{name}");
            if !syncable(&path) {
                continue;
            }
            // `DirEntry::file_type` and `symlink_metadata` do not follow symlinks.
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() && depth + 1 < MAX_DEPTH {
                subdirs.push((entry.path(), format!("{path}/"), depth + 1));
            } else if meta.is_file() && meta.len() <= MAX_FILE_BYTES {
                if out.len() >= max_files {
                    return Ok((out, true));
                }
                out.insert(path, Seen::of(&meta));
            }
        }
        // Reversed, so the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok((out, false))
}

/// Whether `dir` is missing or has no entries (but a fresh filesystem's
/// `lost+found`, as on a new persistent volume).
fn is_empty(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |entries| {
        entries.flatten().all(|e| e.file_name() == "lost+found")
    })
}

/// The parent directory of `rel` under `root`, made where missing, refusing any
/// existing component that is not a real directory (a planted symlink, say).
fn make_parents(root: &Path, rel: &str, owner: Option<(u32, u32)>) -> io::Result<Beneath> {
    let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
    Beneath::open(root)?.make_dirs(parent, owner)
}

/// What a restore brought back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Workspace files written.
    pub files: u64,
    /// Stored files not written (bad path, a directory in the way, gone meanwhile).
    pub skipped: u64,
    /// Files unpacked from the state archive.
    pub state_files: u64,
}

/// What a push did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Files stored.
    pub uploaded: u64,
    /// Files deleted.
    pub deleted: u64,
    /// Files the router refused or that could not be read (tried again next time).
    pub failed: u64,
}

#[derive(serde::Deserialize)]
struct StoredList {
    files: Vec<StoredFile>,
}

#[derive(serde::Deserialize)]
struct StoredFile {
    path: String,
}

/// The router-backed sync of one sandbox's directories.
pub struct RouterSync {
    client: reqwest::Client,
    base: Url,
    credentials: Arc<Credentials>,
    workspace: PathBuf,
    state: PathBuf,
    owner: Option<(u32, u32)>,
    /// The workspace as last synced; the lock also keeps pushes one at a time.
    synced: Mutex<Manifest>,
}

impl std::fmt::Debug for RouterSync {
    // Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterSync")
            .field("base", &self.base.as_str())
            .field("workspace", &self.workspace)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl RouterSync {
    /// A sync through the router at `gateway_url` with the workspace `token`;
    /// files it writes are handed to `owner` (uid, gid) when set.
    pub fn new(
        gateway_url: &str,
        token: &str,
        workspace: &Path,
        state: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Self> {
        Self::with_credentials(
            gateway_url,
            Credentials::assigned(token),
            workspace,
            state,
            owner,
        )
    }

    /// A sync whose requests carry the token `credentials` hold at the time
    /// (a warm pool sandbox gets it with its claim).
    pub fn with_credentials(
        gateway_url: &str,
        credentials: Arc<Credentials>,
        workspace: &Path,
        state: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Self> {
        let base = Url::parse(&format!("{}/", gateway_url.trim_end_matches('/')))
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .ok_or_else(|| SyncError::BadUrl(gateway_url.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            client,
            base,
            credentials,
            workspace: workspace.to_path_buf(),
            state: state.to_path_buf(),
            owner,
            synced: Mutex::new(Manifest::new()),
        })
    }

    /// `v1/workspace/<segments…>/<path's segments, each percent-encoded>`.
    fn url(&self, segments: &[&str], path: Option<&str>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut parts) = url.path_segments_mut() {
            parts
                .pop_if_empty()
                .extend(["v1", "workspace"])
                .extend(segments);
            if let Some(path) = path {
                parts.extend(path.split('/'));
            }
        }
        url
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let token = self.credentials.token().unwrap_or_default();
        self.client
            .request(method, url)
            .header("x-api-key", token.as_ref())
    }

    /// Brings stored files into an empty workspace and the stored state into an
    /// empty state directory, and remembers the workspace as synced.
    pub async fn restore(&self) -> Result<Restored> {
        self.restore_into(false).await
    }

    /// Brings every stored file and the stored state in whatever the
    /// directories hold (a warm pool sandbox just claimed: only what the sandbox
    /// made itself is there, the spare CLI's home and the Python environment;
    /// the user's entries win), and remembers the workspace as synced.
    pub async fn restore_claimed(&self) -> Result<Restored> {
        self.restore_into(true).await
    }

    async fn restore_into(&self, claimed: bool) -> Result<Restored> {
        let mut report = Restored::default();
        if claimed || is_empty(&self.workspace) {
            let list: StoredList = self
                .request(reqwest::Method::GET, self.url(&["files"], None))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            for file in list.files {
                match self.download(&file.path).await {
                    Ok(true) => report.files += 1,
                    Ok(false) => report.skipped += 1,
                    Err(error) => {
                        tracing::warn!(%error, "a stored file could not be restored; skipped");
                        report.skipped += 1;
                    }
                }
            }
        }
        if claimed || is_empty(&self.state) {
            report.state_files = self.restore_state().await?;
        }
        let root = self.workspace.clone();
        let seen = tokio::task::spawn_blocking(move || scan(&root))
            .await?
            .map_err(|source| self.io(&self.workspace, source))?;
        *self.synced.lock().await = seen;
        tracing::info!(
            files = report.files,
            skipped = report.skipped,
            state_files = report.state_files,
            "workspace restored from the router"
        );
        Ok(report)
    }

    fn io(&self, path: &Path, source: io::Error) -> SyncError {
        SyncError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Writes the stored file at `path` into the workspace; `false` when the path
    /// is refused, the router has no such file, or a directory is in the way.
    async fn download(&self, path: &str) -> Result<bool> {
        if !syncable(path) {
            tracing::warn!("a stored path was refused");
            return Ok(false);
        }
        let response = self
            .request(reqwest::Method::GET, self.url(&["files"], Some(path)))
            .send()
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        let response = response.error_for_status()?;
        let pending = {
            let (root, rel, owner) = (self.workspace.clone(), path.to_string(), self.owner);
            tokio::task::spawn_blocking(move || {
                fs::create_dir_all(&root)?;
                Beneath::open(&root)?.create(Path::new(&rel), owner)
            })
            .await?
        };
        let pending = match pending {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(%error, "a stored file could not be placed; skipped");
                return Ok(false);
            }
        };
        let dest = self.workspace.join(path);
        let written: Result<()> = async {
            let file = pending.file.try_clone().map_err(|e| self.io(&dest, e))?;
            let mut file = tokio::fs::File::from_std(file);
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.try_next().await? {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| self.io(&dest, e))?;
            }
            file.flush().await.map_err(|e| self.io(&dest, e))?;
            Ok(())
        }
        .await;
        if let Err(e) = written {
            pending.discard();
            return Err(e);
        }
        match tokio::task::spawn_blocking(move || pending.commit()).await? {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => Ok(false),
            Err(e) => Err(self.io(&dest, e)),
        }
    }

    /// Fetches the stored file at `path` when the workspace has nothing there yet
    /// (an upload made while this sandbox was awake); `true` when it was written.
    pub async fn fetch(&self, path: &str) -> Result<bool> {
        if !syncable(path) || fs::symlink_metadata(self.workspace.join(path)).is_ok() {
            return Ok(false);
        }
        let written = self.download(path).await?;
        if written && let Ok(meta) = fs::symlink_metadata(self.workspace.join(path)) {
            self.synced
                .lock()
                .await
                .insert(path.to_string(), Seen::of(&meta));
        }
        Ok(written)
    }

    /// Pushes changed and removed workspace files, then the state directory.
    pub async fn push(&self) -> Result<Pushed> {
        let mut synced = self.synced.lock().await;
        let root = self.workspace.clone();
        let (now, truncated) = tokio::task::spawn_blocking(move || scan_capped(&root, MAX_FILES))
            .await?
            .map_err(|source| self.io(&self.workspace, source))?;
        let mut todo = changes(&synced, &now);
        // Past the cap, files not seen may still be there: only what is gone goes.
        if truncated {
            todo.removed
                .retain(|path| fs::symlink_metadata(self.workspace.join(path)).is_err());
        }
        let mut report = Pushed::default();
        for path in todo.changed {
            let Some(seen) = now.get(&path).copied() else {
                continue;
            };
            match self.upload(&path).await {
                Ok(()) => {
                    report.uploaded += 1;
                    synced.insert(path, seen);
                }
                Err(error) => {
                    tracing::warn!(%error, "a workspace file could not be pushed");
                    report.failed += 1;
                }
            }
        }
        for path in todo.removed {
            let response = self
                .request(reqwest::Method::DELETE, self.url(&["files"], Some(&path)))
                .send()
                .await?;
            match response.status() {
                s if s.is_success() || s == StatusCode::NOT_FOUND => {
                    report.deleted += 1;
                    synced.remove(&path);
                }
                status => {
                    tracing::warn!(%status, "a removed workspace file could not be deleted");
                    report.failed += 1;
                }
            }
        }
        drop(synced);
        self.push_state().await?;
        tracing::info!(
            uploaded = report.uploaded,
            deleted = report.deleted,
            failed = report.failed,
            "workspace pushed to the router"
        );
        Ok(report)
    }

    async fn upload(&self, path: &str) -> Result<()> {
        let full = self.workspace.join(path);
        let file = open_regular(&full).map_err(|e| self.io(&full, e))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(
            tokio::fs::File::from_std(file),
        ));
        let response = self
            .request(reqwest::Method::PUT, self.url(&["files"], Some(path)))
            .body(body)
            .send()
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(SyncError::Status {
                what: "a file".into(),
                status: response.status(),
            })
        }
    }

    /// Packs the state directory and stores it as the state archive (a missing
    /// directory stores nothing and keeps the stored archive).
    pub async fn push_state(&self) -> Result<()> {
        if !self.state.is_dir() {
            return Ok(());
        }
        let (root, temp) = (
            self.state.clone(),
            self.state.join(format!("{TEMP_PREFIX}state.tar.gz")),
        );
        let archive = {
            let temp = temp.clone();
            tokio::task::spawn_blocking(move || pack(&root, &temp))
                .await?
                .map_err(|e| self.io(&self.state, e))
        };
        let result = async {
            let file = tokio::fs::File::from_std(archive?);
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
            let response = self
                .request(reqwest::Method::PUT, self.url(&["state"], None))
                .body(body)
                .send()
                .await?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(SyncError::Status {
                    what: "the state archive".into(),
                    status: response.status(),
                })
            }
        }
        .await;
        let _ = tokio::fs::remove_file(&temp).await;
        result
    }

    async fn restore_state(&self) -> Result<u64> {
        let response = self
            .request(reqwest::Method::GET, self.url(&["state"], None))
            .send()
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(0);
        }
        let response = response.error_for_status()?;
        fs::create_dir_all(&self.state).map_err(|e| self.io(&self.state, e))?;
        let temp = self.state.join(format!("{TEMP_PREFIX}state.tar.gz"));
        let written: Result<()> = async {
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| self.io(&temp, e))?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.try_next().await? {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| self.io(&temp, e))?;
            }
            file.flush().await.map_err(|e| self.io(&temp, e))
        }
        .await;
        let result = match written {
            Ok(()) => {
                let (archive, root, owner) = (temp.clone(), self.state.clone(), self.owner);
                tokio::task::spawn_blocking(move || unpack(&archive, &root, owner))
                    .await?
                    .map_err(|e| self.io(&self.state, e))
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&temp).await;
        result
    }
}

/// Opens `path` for reading if it is a regular file (not through a symlink).
fn open_regular(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Writes a gzipped tar of the files of `root` to `out`; returns it reopened.
fn pack(root: &Path, out: &Path) -> io::Result<fs::File> {
    use flate2::{Compression, write::GzEncoder};
    let files = scan(root)?;
    let file = fs::File::create(out)?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
    for path in files.keys() {
        let Ok(file) = open_regular(&root.join(path)) else {
            continue;
        };
        let meta = file.metadata()?;
        let size = meta.len();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(if meta.permissions().mode() & 0o100 != 0 {
            0o755
        } else {
            0o644
        });
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        // Exactly `size` bytes even if the file changes meanwhile: cut or zero-padded.
        let data = file.take(size).chain(io::repeat(0)).take(size);
        tar.append_data(&mut header, path, data)?;
    }
    tar.into_inner()?.finish()?.sync_all()?;
    fs::File::open(out)
}

/// Extracts the files and directories of a gzipped tar into `root`; entries at
/// unsafe paths and of other kinds are skipped. Returns the files written.
fn unpack(archive: &Path, root: &Path, owner: Option<(u32, u32)>) -> io::Result<u64> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(archive)?));
    tar.set_preserve_permissions(false);
    tar.set_overwrite(true);
    let mut files = 0u64;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_end_matches('/');
        let kind = entry.header().entry_type();
        if !syncable(name) || !(kind.is_file() || kind.is_dir()) {
            tracing::warn!("a state archive entry was skipped");
            continue;
        }
        if kind.is_file() {
            make_parents(root, name, None)?;
        }
        // `unpack_in` refuses paths that leave `root`.
        if entry.unpack_in(root)? && kind.is_file() {
            files += 1;
            if let Some((uid, gid)) = owner {
                let _ = std::os::unix::fs::lchown(root.join(name), Some(uid), Some(gid));
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests;
