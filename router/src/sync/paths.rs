//! Paths between the workspace, storage keys and the filesystem, made safe.
//!
//! A stored path is relative, `/`-separated UTF-8 with no empty, `.` or `..`
//! component, no NUL or control character and no backslash; [`relative`] checks it
//! before anything touches the disk. The router runs with more rights than the
//! sandbox that writes these directories, while the agent may be changing them:
//! every file operation starts from the directory's descriptor ([`Beneath`],
//! shared with the sandbox's own sync), resolves below it refusing symlinks, opens
//! without blocking and only regular files, and writes new files under a fresh
//! temporary name in a held parent directory before renaming them into place.

use std::path::{Component, PathBuf};

pub use sandbox::sync::beneath::{Beneath, TEMP_PREFIX};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, path::Path};

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
        let root_path = root.path();
        std::os::unix::fs::symlink(outside.path().join("secret"), root_path.join("link"))
            .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root_path.join("dir")).expect("symlink");
        let dir = Beneath::open(root_path).expect("open");
        assert!(dir.open_file(Path::new("link")).is_err());
        assert!(dir.open_file(Path::new("dir/secret")).is_err());
        assert!(dir.create(Path::new("dir/new"), None).is_err());
        assert!(!outside.path().join("new").exists());
        // A symlink as the last component is replaced, not followed.
        let pending = dir.create(Path::new("link"), None).expect("create");
        pending.commit().expect("commit");
        assert!(
            fs::symlink_metadata(root_path.join("link"))
                .expect("meta")
                .is_file()
        );
        assert_eq!(fs::read(outside.path().join("secret")).expect("read"), b"s");
    }
}
