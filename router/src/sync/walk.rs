//! Finding the files of a directory to sync: regular files only, symlinks never
//! followed (also one swapped in while the walk runs), FIFOs and devices skipped,
//! ignored directories skipped, and the caps of [`super::Limits`] applied.
//! Blocking; run it in `spawn_blocking`.

use std::path::Path;

use rustix::fs::FileType;
use sandbox::sync::beneath::kind;

use super::{
    Limits,
    paths::{self, Beneath},
};

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

/// Walks `root` depth-first in name order. Each directory is opened below `root`
/// refusing symlinks on the way ([`Beneath::dir`]) and its entries are described
/// by `lstat` relative to that descriptor, so a directory swapped for a symlink
/// meanwhile is skipped, never followed.
pub fn walk(root: &Beneath, limits: &Limits) -> std::io::Result<Walk> {
    let mut out = Walk::default();
    let mut total = 0u64;
    // (its stored prefix, its depth)
    let mut stack = vec![(String::new(), 0usize)];
    while let Some((prefix, depth)) = stack.pop() {
        let listed = root
            .dir(Path::new(prefix.trim_end_matches('/')))
            .and_then(|dir| dir.entries());
        let mut entries = match listed {
            Ok(entries) => entries,
            Err(e) if prefix.is_empty() => return Err(e),
            Err(_) => {
                out.skipped += 1;
                continue;
            }
        };
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, stat) in entries {
            let Some(name) = name.to_str().map(str::to_string) else {
                out.skipped += 1;
                continue;
            };
            if ignored(&name) || name.starts_with(paths::TEMP_PREFIX) {
                continue;
            }
            let path = format!("{prefix}{name}");
            let Some(stat) = stat else {
                out.skipped += 1;
                continue;
            };
            let kind = kind(&stat);
            if paths::relative(&path).is_none() {
                out.skipped += 1;
            } else if kind == FileType::Directory {
                if depth + 1 >= limits.max_depth {
                    out.skipped += 1;
                } else {
                    subdirs.push((format!("{path}/"), depth + 1));
                }
            } else if kind == FileType::RegularFile {
                let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
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
                // Symlinks, FIFOs, sockets, devices.
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
    use std::fs;

    #[test]
    fn walks_regular_files_and_skips_links_ignored_dirs_and_big_files() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
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
        let w = walk(&Beneath::open(root).expect("open"), &limits).expect("walk");
        let found: Vec<_> = w.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(found, ["a.txt", "src/main.py"]);
        assert_eq!(w.skipped, 3, "big.bin and two symlinks");
        assert!(!w.truncated);

        let limits = Limits {
            max_files: 1,
            ..Limits::default()
        };
        let w = walk(&Beneath::open(root).expect("open"), &limits).expect("walk");
        assert_eq!(w.files.len(), 1);
        assert!(w.truncated);
    }
}
