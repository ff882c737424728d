//! The copy of an upload in a workspace directory on this machine (the local
//! backend's `workspace/uploads/…`).
//!
//! The router writes there with more rights than the sandbox that owns the
//! directory, while the agent may be running: the copy is written under a
//! temporary name in a parent checked to be a real directory, handed to the
//! sandbox's user by its open descriptor, and linked into place only if nothing is
//! there yet (never over a file). Removal walks the path with `openat`
//! refusing symlinks and unlinks the last component (a symlink planted there is
//! removed, not followed). When to do either is the caller's business.

use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::{
    storage::Storage,
    sync::{SyncError, paths},
};

/// What [`place`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// The file is in the workspace.
    Written,
    /// Something already has that path; it was left alone.
    Taken,
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether something (a file, a directory, a symlink) is at `rel` under `root`.
pub fn exists(root: &Path, rel: &str) -> bool {
    paths::relative(rel).is_some_and(|rel| std::fs::symlink_metadata(root.join(rel)).is_ok())
}

/// Copies the object at `key` to `rel` under the workspace `root`, owned by
/// `owner` (uid, gid) when given. Refuses unsafe paths.
pub async fn place(
    storage: &Storage,
    root: &Path,
    rel: &str,
    key: &str,
    owner: Option<(u32, u32)>,
) -> Result<Placed, SyncError> {
    let rel_path = paths::relative(rel).ok_or_else(|| SyncError::Io {
        path: PathBuf::from(rel),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a safe workspace path"),
    })?;
    let root = root.canonicalize().map_err(io_error(root))?;
    let pending = {
        let (base, rel_path) = (root.clone(), rel_path.clone());
        tokio::task::spawn_blocking(move || {
            let root = base;
            if let Some(parent) = rel_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                let dir = paths::make_dirs_inside(&root, parent)?;
                // Directories the router made belong to the sandbox too.
                if let Some((uid, gid)) = owner {
                    let mut made = dir.as_path();
                    while made != root {
                        let meta = std::fs::symlink_metadata(made)?;
                        if meta.uid() != uid {
                            std::os::unix::fs::lchown(made, Some(uid), Some(gid))?;
                        }
                        made = match made.parent() {
                            Some(p) => p,
                            None => break,
                        };
                    }
                }
            }
            paths::create_inside(&root, &rel_path)
        })
        .await?
        .map_err(io_error(&root))?
    };
    let copied = async {
        let file = pending.file.try_clone().map_err(io_error(&root))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(io_error(&root))?;
        }
        let mut file = tokio::fs::File::from_std(file);
        storage.copy_to(key, &mut file).await?;
        file.sync_all().await.map_err(io_error(&root))?;
        Ok::<_, SyncError>(())
    }
    .await;
    if let Err(e) = copied {
        pending.discard();
        return Err(e);
    }
    let linked = tokio::task::spawn_blocking(move || pending.commit_new())
        .await?
        .map_err(io_error(&root))?;
    Ok(if linked {
        Placed::Written
    } else {
        Placed::Taken
    })
}

/// Removes what is at `rel` under `root` (a file or a symlink, never a
/// directory); `false` when there was nothing to remove. Symlinks on the way are
/// refused, so nothing outside `root` can be reached.
pub fn remove(root: &Path, rel: &str) -> io::Result<bool> {
    let Some(rel_path) = paths::relative(rel) else {
        return Ok(false);
    };
    let parts: Vec<&str> = rel.split('/').collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Ok(false);
    };
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, flags, Mode::empty())?;
    for part in dirs {
        dir = match rustix::fs::openat(&dir, *part, flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if gone(e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
    }
    match rustix::fs::unlinkat(&dir, *last, AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(e) if gone(e) || e == rustix::io::Errno::ISDIR => Ok(false),
        Err(e) => {
            tracing::warn!(error = %e, path = %rel_path.display(), "removing a workspace copy failed");
            Err(e.into())
        }
    }
}

/// Errors that mean "nothing there to remove": missing, or a symlink or file
/// where a directory was expected.
fn gone(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    e == Errno::NOENT || e == Errno::NOTDIR || e == Errno::LOOP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_never_follows_a_planted_symlink() {
        let root = tempfile::tempdir().expect("dir");
        let outside = tempfile::tempdir().expect("dir");
        std::fs::write(outside.path().join("passwd"), b"keep").expect("write");
        // The agent replaced uploads/ with a link to a directory outside.
        std::os::unix::fs::symlink(outside.path(), root.path().join("uploads")).expect("link");
        assert!(!remove(root.path(), "uploads/passwd").expect("no error"));
        assert_eq!(
            std::fs::read(outside.path().join("passwd")).expect("still there"),
            b"keep"
        );
        // A real file is removed; a missing one is not an error.
        std::fs::remove_file(root.path().join("uploads")).expect("unlink");
        std::fs::create_dir(root.path().join("uploads")).expect("mkdir");
        std::fs::write(root.path().join("uploads/a.txt"), b"x").expect("write");
        assert!(remove(root.path(), "uploads/a.txt").expect("removed"));
        assert!(!root.path().join("uploads/a.txt").exists());
        assert!(!remove(root.path(), "uploads/a.txt").expect("nothing"));
        assert!(!remove(root.path(), "../x").expect("refused"));
    }

    #[tokio::test]
    async fn a_copy_never_replaces_what_is_there() {
        let store_dir = tempfile::tempdir().expect("dir");
        let storage =
            Storage::open(&format!("file:{}", store_dir.path().display())).expect("storage");
        storage
            .put("users/u/uploads/1", bytes::Bytes::from_static(b"upload"))
            .await
            .expect("put");
        let root = tempfile::tempdir().expect("dir");
        let placed = place(
            &storage,
            root.path(),
            "uploads/a.txt",
            "users/u/uploads/1",
            None,
        )
        .await
        .expect("placed");
        assert_eq!(placed, Placed::Written);
        assert_eq!(
            std::fs::read(root.path().join("uploads/a.txt")).expect("read"),
            b"upload"
        );
        std::fs::write(root.path().join("uploads/b.txt"), b"agent's").expect("write");
        let placed = place(
            &storage,
            root.path(),
            "uploads/b.txt",
            "users/u/uploads/1",
            None,
        )
        .await
        .expect("placed");
        assert_eq!(placed, Placed::Taken);
        assert_eq!(
            std::fs::read(root.path().join("uploads/b.txt")).expect("read"),
            b"agent's"
        );
        let leftovers: Vec<_> = std::fs::read_dir(root.path().join("uploads"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }
}
