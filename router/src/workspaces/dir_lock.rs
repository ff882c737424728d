//! One router per data directory: the local backend's run directory (sockets)
//! and workspaces directory are locked for the router's whole life.
//!
//! Two routers on the same directories would start two sandboxes on one
//! workspace, and the second would rebind the first's gateway socket, so that
//! when it exits every chat of the first fails. The lock is an advisory `flock`
//! on a `router.lock` file in each directory, taken without waiting: the kernel
//! drops it when the process ends however it ends, so a crash leaves nothing to
//! clean up. The holder writes who it is into the file, so the one refused can
//! name it. Only the router binary takes it (tests that build routers in-process
//! give each its own directories).

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
};

/// The lock file's name inside each locked directory.
pub const LOCK_FILE: &str = "router.lock";

/// Why the data directories could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another router holds the lock.
    #[error(
        "another router ({holder}) is already using the data directory {}: \
         stop it first, or give this one its own directories \
         (JARVIS_RUN_DIR, JARVIS_WORKSPACES_DIR)",
        dir.display()
    )]
    Held {
        /// The directory whose lock is held.
        dir: PathBuf,
        /// What the holder wrote about itself.
        holder: String,
    },
    /// The directory or its lock file could not be made or locked.
    #[error("locking the data directory {}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Held locks; dropping it releases them.
#[derive(Debug)]
pub struct DirLock {
    _files: Vec<File>,
}

/// Locks each of `dirs` (creating it if missing) for this process, and writes
/// `who` (e.g. "pid 42, serving http://127.0.0.1:8080") into each lock file.
pub fn lock(dirs: &[&Path], who: &str) -> Result<DirLock, LockError> {
    let mut files = Vec::with_capacity(dirs.len());
    for dir in dirs {
        files.push(lock_one(dir, who)?);
    }
    Ok(DirLock { _files: files })
}

fn lock_one(dir: &Path, who: &str) -> Result<File, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // Not truncated on open: a refused router must not erase the holder's name.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.take(512).read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "its pid is unknown".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(format!("{who}\n").as_bytes()).map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        let first = lock(&[&run], "pid 1, serving http://127.0.0.1:1").expect("first lock");
        let refused = lock(&[&run], "pid 2").expect_err("second lock refused");
        let message = refused.to_string();
        assert!(
            message.contains("pid 1, serving http://127.0.0.1:1"),
            "{message}"
        );
        assert!(message.contains(&run.display().to_string()), "{message}");
        // The refused attempt left the holder's name in place.
        let again = lock(&[&run], "pid 3").expect_err("still held");
        assert!(again.to_string().contains("pid 1"), "{again}");
        drop(first);
        let _third = lock(&[&run], "pid 3").expect("free once the holder is gone");
        let written = std::fs::read_to_string(run.join(LOCK_FILE)).expect("lock file");
        assert_eq!(written, "pid 3\n");
    }

    #[test]
    fn every_directory_is_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (run, work) = (dir.path().join("run"), dir.path().join("ws"));
        let _held = lock(&[&run, &work], "pid 1").expect("locks");
        // Another router with its own run directory but the same workspaces.
        let other = dir.path().join("run2");
        let refused = lock(&[&other, &work], "pid 2").expect_err("workspaces are held");
        assert!(matches!(refused, LockError::Held { dir, .. } if dir == work));
    }
}
