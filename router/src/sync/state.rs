//! The sandbox's state directory ⇄ one gzipped tar at [`super::state_key`].
//!
//! One archive, replaced whole by a single put (or a multipart upload completed
//! at once), so a restore never mixes a transcript of one moment with a seq file
//! of another. It is built in a temporary file and streamed, never held in memory.
//! Only regular files and directories are archived and extracted; entry paths are
//! checked like workspace paths, and extraction stops at the [`Limits`] caps.

use std::{
    fs::{self, File},
    io::{self, Read},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use uuid::Uuid;

use super::{Limits, Result, SyncError, SyncReport, canonical_dir, paths, state_key, walk};
use crate::storage::Storage;

/// A temporary file removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("jarvis-state-{}.tar.gz", Uuid::new_v4())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Stores `state_dir` as `user_id`'s state archive, replacing the previous one.
/// A missing directory stores nothing (and keeps the previous archive).
pub async fn save_state(storage: &Storage, user_id: Uuid, state_dir: &Path) -> Result<SyncReport> {
    save_state_with(storage, user_id, state_dir, &Limits::default()).await
}

/// [`save_state`] under `limits`: an archive that does not fit in `limits.room`
/// is not stored (the previous one is kept) and the report's `over_quota` is 1.
#[tracing::instrument(skip(storage, state_dir, limits), fields(user.id = %user_id))]
pub async fn save_state_with(
    storage: &Storage,
    user_id: Uuid,
    state_dir: &Path,
    limits: &Limits,
) -> Result<SyncReport> {
    let Ok(root) = state_dir.canonicalize() else {
        tracing::debug!("no state directory to save");
        return Ok(SyncReport::default());
    };
    let temp = TempFile::new();
    let (archive, report) = {
        let path = temp.0.clone();
        tokio::task::spawn_blocking(move || pack(&root, &path, &Limits::default()))
            .await?
            .map_err(|source| SyncError::Io {
                path: state_dir.to_path_buf(),
                source,
            })?
    };
    let size = archive
        .metadata()
        .map_err(|source| SyncError::Io {
            path: temp.0.clone(),
            source,
        })?
        .len();
    if let Some(room) = limits.room {
        let replacing = storage.head(&state_key(user_id)).await?.unwrap_or(0);
        if !room.fits(size, replacing) {
            tracing::warn!(
                bytes = size,
                "agent state not stored: the plan's storage is full"
            );
            return Ok(SyncReport {
                over_quota: 1,
                ..report
            });
        }
    }
    let info = storage
        .put_reader(
            &state_key(user_id),
            tokio::fs::File::from_std(archive),
            None,
        )
        .await?;
    let report = SyncReport {
        bytes: info.size,
        ..report
    };
    tracing::info!(
        files = report.uploaded,
        bytes = report.bytes,
        skipped = report.skipped,
        "state saved"
    );
    Ok(report)
}

/// Stores a state archive a sandbox packed itself (a gzipped tar, as
/// [`save_state`] makes) from `reader`, at most `max_bytes`: it is received into a
/// temporary file and checked (a readable gzipped tar whose entries are files and
/// directories at safe paths) before it replaces the stored one, so a bad or cut
/// off archive changes nothing. Returns the number of files in it. At most
/// `limits.max_total_bytes`; one that does not fit in `limits.room` is refused
/// with [`SyncError::OverQuota`].
#[tracing::instrument(skip(storage, reader, limits), fields(user.id = %user_id))]
pub async fn save_state_archive<R: tokio::io::AsyncRead + Unpin + Send>(
    storage: &Storage,
    user_id: Uuid,
    mut reader: R,
    limits: &Limits,
) -> Result<u64> {
    use tokio::io::AsyncReadExt;
    let mut max_bytes = limits.max_total_bytes;
    if let Some(left) = limits.room.and_then(|r| r.left()) {
        let replacing = storage.head(&state_key(user_id)).await?.unwrap_or(0);
        max_bytes = max_bytes.min(left.saturating_add(replacing));
    }
    let temp = TempFile::new();
    let io = |source| SyncError::Io {
        path: temp.0.clone(),
        source,
    };
    let mut file = tokio::fs::File::create(&temp.0).await.map_err(io)?;
    let copied = tokio::io::copy(&mut (&mut reader).take(max_bytes + 1), &mut file)
        .await
        .map_err(|source| {
            SyncError::Storage(crate::storage::StorageError::Io {
                key: state_key(user_id),
                source,
            })
        })?;
    if copied > max_bytes {
        if let Some(room) = limits.room
            && max_bytes < limits.max_total_bytes
        {
            return Err(SyncError::OverQuota(room));
        }
        return Err(SyncError::Storage(crate::storage::StorageError::TooLarge {
            key: state_key(user_id),
            limit: max_bytes,
        }));
    }
    drop(file);
    let path = temp.0.clone();
    let files = tokio::task::spawn_blocking(move || check_archive(&path, &Limits::default()))
        .await?
        .map_err(|e| SyncError::BadArchive(e.to_string()))?;
    let archive = tokio::fs::File::open(&temp.0).await.map_err(io)?;
    storage
        .put_reader(&state_key(user_id), archive, None)
        .await?;
    tracing::info!(files, bytes = copied, "state archive stored");
    Ok(files)
}

/// Reads every entry of a gzipped tar; the number of regular files, or why it is
/// not an archive [`unpack`] takes whole.
fn check_archive(archive: &Path, limits: &Limits) -> io::Result<u64> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut tar = tar::Archive::new(GzDecoder::new(File::open(archive)?));
    let (mut files, mut total) = (0u64, 0u64);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw);
        if paths::relative(name.trim_end_matches('/')).is_none() {
            return Err(bad("an entry has an unsafe path"));
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => {}
            tar::EntryType::Regular => {
                files += 1;
                total = total.saturating_add(entry.header().size()?);
                if files > limits.max_files || total > limits.max_total_bytes {
                    return Err(bad("over the state caps"));
                }
                io::copy(&mut entry, &mut io::sink())?;
            }
            _ => return Err(bad("an entry is neither a file nor a directory")),
        }
    }
    Ok(files)
}

/// Writes the archive of `root` to `out`; returns it reopened for reading.
fn pack(root: &Path, out: &Path, limits: &Limits) -> io::Result<(File, SyncReport)> {
    let root = paths::Beneath::open(root)?;
    let found = walk::walk(&root, limits)?;
    let mut report = SyncReport {
        skipped: found.skipped,
        truncated: found.truncated(),
        workspace_quota: found.over_quota,
        ..SyncReport::default()
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
    for f in &found.files {
        let Some(rel) = paths::relative(&f.path) else {
            report.skipped += 1;
            continue;
        };
        let (file, meta) = match root.open_file(&rel) {
            Ok(opened) => opened,
            Err(error) => {
                tracing::warn!(%error, "a state file could not be read; skipped");
                report.skipped += 1;
                continue;
            }
        };
        let size = meta.len();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(if meta.permissions().mode() & 0o100 != 0 {
            0o755
        } else {
            0o644
        });
        header.set_mtime(
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
        );
        // Exactly `size` bytes even if the file changes meanwhile: cut or zero-padded.
        let data = file.take(size).chain(io::repeat(0)).take(size);
        tar.append_data(&mut header, &f.path, data)?;
        report.uploaded += 1;
    }
    tar.into_inner()?.finish()?.sync_all()?;
    Ok((File::open(out)?, report))
}

/// Extracts `user_id`'s state archive into `state_dir` (created if missing);
/// returns the number of files written (0 when there is no archive).
#[tracing::instrument(skip(storage, state_dir), fields(user.id = %user_id))]
pub async fn restore_state(storage: &Storage, user_id: Uuid, state_dir: &Path) -> Result<u64> {
    let root = canonical_dir(state_dir)?;
    let key = state_key(user_id);
    if storage.head(&key).await?.is_none() {
        return Ok(0);
    }
    let temp = TempFile::new();
    let io = |source| SyncError::Io {
        path: temp.0.clone(),
        source,
    };
    let mut file = tokio::fs::File::create(&temp.0).await.map_err(io)?;
    storage.copy_to(&key, &mut file).await?;
    drop(file);
    let path = temp.0.clone();
    let files = tokio::task::spawn_blocking(move || unpack(&path, &root, &Limits::default()))
        .await?
        .map_err(io)?;
    tracing::info!(files, "state restored");
    Ok(files)
}

fn unpack(archive: &Path, root: &Path, limits: &Limits) -> io::Result<u64> {
    let root = paths::Beneath::open(root)?;
    let mut tar = tar::Archive::new(GzDecoder::new(File::open(archive)?));
    let (mut files, mut total) = (0u64, 0u64);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw);
        let name = name.trim_end_matches('/');
        let Some(rel) = paths::relative(name) else {
            tracing::warn!("state archive entry with an unsafe path skipped");
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if let Err(e) = root.make_dirs(&rel, None) {
                    tracing::warn!(error = %e, "a state directory could not be made; skipped");
                }
            }
            tar::EntryType::Regular => {
                let size = entry.header().size()?;
                total = total.saturating_add(size);
                if files >= limits.max_files
                    || size > limits.max_file_bytes
                    || total > limits.max_total_bytes
                {
                    tracing::warn!("state archive over the caps; the rest is skipped");
                    break;
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut pending = match root.create(&rel, None) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "a state file could not be placed; skipped");
                        continue;
                    }
                };
                let written = io::copy(&mut (&mut entry).take(size), &mut pending.file);
                match written {
                    Ok(_) => {
                        let perm = if mode & 0o100 != 0 { 0o755 } else { 0o644 };
                        pending
                            .file
                            .set_permissions(fs::Permissions::from_mode(perm))?;
                        match pending.commit() {
                            Ok(()) => files += 1,
                            Err(e) => {
                                tracing::warn!(error = %e, "a state file could not be placed; skipped")
                            }
                        }
                    }
                    Err(e) => {
                        pending.discard();
                        return Err(e);
                    }
                }
            }
            _ => tracing::debug!("state archive entry that is not a file or directory skipped"),
        }
    }
    Ok(files)
}
