//! The copy of an upload in a workspace directory on this machine (the local
//! backend's `workspace/uploads/…`).
//!
//! The router writes there as root while the agent may be running and changing
//! the directory under it (swapping `uploads` for a symlink in a loop, say). So
//! nothing here is done by path: the workspace is opened once and every step works
//! from directory descriptors resolved below it with symlinks refused
//! ([`paths::Beneath`]). The copy is written under a temporary name in the held
//! parent directory, handed to the sandbox's user by its descriptor, and renamed
//! into place only if nothing is there yet (never over a file). Removal unlinks
//! the last component in its held parent (a symlink planted there is removed, not
//! followed). When to do either is the caller's business.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

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

/// Whether something (a file, a directory, a symlink) is at `rel` under `root`
/// (a missing `root` has nothing; a directory that cannot be read counts as taken).
pub fn exists(root: &Path, rel: &str) -> bool {
    paths::relative(rel).is_some_and(|rel| {
        match paths::Beneath::open(root).and_then(|dir| dir.stat(&rel)) {
            Ok(found) => found.is_some(),
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        }
    })
}

/// Copies the object at `key` to `rel` under the workspace `root`, owned by
/// `owner` (uid, gid) when given (the file and any directory made for it).
/// Refuses unsafe paths.
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
    let dir = Arc::new(paths::Beneath::open(root).map_err(io_error(root))?);
    let pending = tokio::task::spawn_blocking(move || dir.create(&rel_path, owner))
        .await?
        .map_err(io_error(root))?;
    let copied = async {
        let file = pending.file.try_clone().map_err(io_error(root))?;
        let mut file = tokio::fs::File::from_std(file);
        storage.copy_to(key, &mut file).await?;
        file.sync_all().await.map_err(io_error(root))?;
        Ok::<_, SyncError>(())
    }
    .await;
    if let Err(e) = copied {
        pending.discard();
        return Err(e);
    }
    let linked = tokio::task::spawn_blocking(move || pending.commit_new())
        .await?
        .map_err(io_error(root))?;
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
    paths::Beneath::open(root)?
        .remove_file(&rel_path)
        .inspect_err(|e| {
            tracing::warn!(error = %e, path = %rel_path.display(), "removing a workspace copy failed");
        })
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
