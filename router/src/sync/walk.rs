//! Finding the files of a directory to sync: regular files only, symlinks never
//! followed, ignored directories skipped, and the caps of [`super::Limits`] applied.
//! Blocking; run it in `spawn_blocking`.

use std::{fs, path::Path};

use super::{Limits, paths};

/// A file to sync.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its stored path (relative, `/`-separated).
    pub path: String,
    /// Its size when it was seen.
    pub size: u64,
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Files within the caps, in path order.
    pub files: Vec<Found>,
    /// Entries left out: symlinks, special files, names that cannot be stored,
    /// files over the size cap.
    pub skipped: u64,
    /// The file count or total size cap was reached: files past it were not seen.
    pub truncated: bool,
}

/// Whether a directory or file name is never synced.
pub fn ignored(name: &str) -> bool {
    super::IGNORED.contains(&name)
}

/// Walks `root` (canonical) depth-first in name order.
pub fn walk(root: &Path, limits: &Limits) -> std::io::Result<Walk> {
    let mut out = Walk::default();
    let mut total = 0u64;
    // (directory relative to root, its stored prefix)
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        let mut entries: Vec<_> = match fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(Result::ok).collect(),
            Err(e) if dir == root => return Err(e),
            Err(_) => {
                out.skipped += 1;
                continue;
            }
        };
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                out.skipped += 1;
                continue;
            };
            if ignored(&name) || name.starts_with(".jarvis-restore-") {
                continue;
            }
            let path = format!("{prefix}{name}");
            // `DirEntry::file_type` does not follow symlinks.
            let Ok(kind) = entry.file_type() else {
                out.skipped += 1;
                continue;
            };
            if paths::relative(&path).is_none() || kind.is_symlink() {
                out.skipped += 1;
            } else if kind.is_dir() {
                if depth + 1 >= limits.max_depth {
                    out.skipped += 1;
                } else {
                    subdirs.push((entry.path(), format!("{path}/"), depth + 1));
                }
            } else if kind.is_file() {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                if size > limits.max_file_bytes {
                    out.skipped += 1;
                } else if out.files.len() as u64 >= limits.max_files
                    || total.saturating_add(size) > limits.max_total_bytes
                {
                    out.truncated = true;
                    return Ok(out);
                } else {
                    total += size;
                    out.files.push(Found { path, size });
                }
            } else {
                out.skipped += 1;
            }
        }
        // Reverse so the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_regular_files_and_skips_links_ignored_dirs_and_big_files() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().canonicalize().expect("canonical");
        fs::create_dir_all(root.join("src/node_modules/x")).expect("mkdir");
        fs::create_dir_all(root.join("__pycache__")).expect("mkdir");
        fs::write(root.join("src/main.py"), b"print(1)").expect("write");
        fs::write(root.join("src/node_modules/x/i.js"), b"x").expect("write");
        fs::write(root.join("__pycache__/m.pyc"), b"x").expect("write");
        fs::write(root.join("a.txt"), b"a").expect("write");
        fs::write(root.join("big.bin"), vec![0u8; 2048]).expect("write");
        std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).expect("symlink");
        std::os::unix::fs::symlink("/etc", root.join("etc")).expect("symlink");
        let limits = Limits {
            max_file_bytes: 1024,
            ..Limits::default()
        };
        let w = walk(&root, &limits).expect("walk");
        let found: Vec<_> = w.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(found, ["a.txt", "src/main.py"]);
        assert_eq!(w.skipped, 3, "big.bin and two symlinks");
        assert!(!w.truncated);

        let limits = Limits {
            max_files: 1,
            ..Limits::default()
        };
        let w = walk(&root, &limits).expect("walk");
        assert_eq!(w.files.len(), 1);
        assert!(w.truncated);
    }
}
