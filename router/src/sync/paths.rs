//! Paths between the workspace, storage keys and the filesystem, made safe.
//!
//! A stored path is relative, `/`-separated UTF-8 with no empty, `.` or `..`
//! component, no NUL or control character and no backslash; [`relative`] checks it
//! before anything touches the disk. The router runs with more rights than the
//! sandbox that writes these directories, so files are opened without following
//! symlinks and checked to really lie inside the root ([`open_inside`]), and
//! restored files are written to a fresh temporary name and renamed into a parent
//! that was checked to be a real directory ([`create_inside`]).

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Component, Path, PathBuf},
};

/// Longest stored path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Checks a stored path and returns it as a relative filesystem path.
pub fn relative(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.starts_with('/') {
        return None;
    }
    let ok = path.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part.len() <= 255
            && !part.chars().any(|c| c.is_control() || c == '\\')
    });
    let rel = PathBuf::from(path);
    (ok && rel.components().all(|c| matches!(c, Component::Normal(_)))).then_some(rel)
}

/// Whether `real` (a resolved path) lies inside `root` (a resolved directory).
fn inside(root: &Path, real: &Path) -> bool {
    real.starts_with(root) && real != root
}

/// Where an open file really is, from the kernel (not from a path that can change).
fn real_path(file: &File) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Opens `root/rel` for reading if it is a regular file inside `root` reached
/// without symlinks. `root` must be canonical.
pub fn open_inside(root: &Path, rel: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(root.join(rel))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if !inside(root, &real_path(&file)?) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "reached through a symlink out of the directory",
        ));
    }
    Ok((file, meta.len()))
}

pub use sandbox::sync::make_dirs_inside;

/// A new file that will become `root/rel` when [`Pending::commit`]ted: written
/// under a temporary name in the (checked) parent, then renamed over whatever was
/// there, so a symlink at `rel` is replaced, never followed.
pub struct Pending {
    /// The open temporary file.
    pub file: File,
    temp: PathBuf,
    dest: PathBuf,
}

/// Starts writing `root/rel` (see [`Pending`]).
pub fn create_inside(root: &Path, rel: &Path) -> io::Result<Pending> {
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => make_dirs_inside(root, p)?,
        _ => root.to_path_buf(),
    };
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let temp = parent.join(format!(".jarvis-restore-{}", uuid::Uuid::new_v4()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)?;
    if !inside(root, &real_path(&file)?) {
        let _ = fs::remove_file(&temp);
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "outside the directory",
        ));
    }
    Ok(Pending {
        file,
        temp,
        dest: parent.join(name),
    })
}

impl Pending {
    /// The temporary file's path (for async writers that reopen it).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Moves the written file into place.
    pub fn commit(self) -> io::Result<()> {
        if let Ok(meta) = fs::symlink_metadata(&self.dest)
            && meta.is_dir()
        {
            let _ = fs::remove_file(&self.temp);
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a directory is in the way",
            ));
        }
        fs::rename(&self.temp, &self.dest)
    }

    /// Links the written file into place only if nothing is at its path yet;
    /// `false` when something is (that is left alone). The temporary name goes
    /// either way.
    pub fn commit_new(self) -> io::Result<bool> {
        let linked = fs::hard_link(&self.temp, &self.dest);
        let _ = fs::remove_file(&self.temp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the temporary file.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\0b",
            "a\nb",
            "a\\b",
        ] {
            assert!(relative(bad).is_none(), "{bad:?} accepted");
        }
        for good in ["a", "src/main.py", ".hidden/x", "a..b/c", "résumé.txt"] {
            assert!(relative(good).is_some(), "{good:?} refused");
        }
    }

    #[test]
    fn symlinks_out_of_the_root_are_neither_read_nor_written_through() {
        let root = tempfile::tempdir().expect("dir");
        let outside = tempfile::tempdir().expect("dir");
        fs::write(outside.path().join("secret"), b"s").expect("write");
        let root_path = root.path().canonicalize().expect("canonical");
        std::os::unix::fs::symlink(outside.path().join("secret"), root_path.join("link"))
            .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root_path.join("dir")).expect("symlink");
        assert!(open_inside(&root_path, Path::new("link")).is_err());
        assert!(open_inside(&root_path, Path::new("dir/secret")).is_err());
        assert!(create_inside(&root_path, Path::new("dir/new")).is_err());
        assert!(!outside.path().join("new").exists());
        // A symlink as the last component is replaced, not followed.
        let pending = create_inside(&root_path, Path::new("link")).expect("create");
        pending.commit().expect("commit");
        assert!(
            fs::symlink_metadata(root_path.join("link"))
                .expect("meta")
                .is_file()
        );
        assert_eq!(fs::read(outside.path().join("secret")).expect("read"), b"s");
    }
}
