//! Finding the files of a directory to sync: regular files only, symlinks never
//! followed (also one swapped in while the walk runs), FIFOs and devices skipped,
//! ignored directories skipped, and the caps of [`super::Limits`] applied.
//!
//! The walk streams: directories are read an entry at a time and it stops as soon
//! as a cap is reached, so what it holds is bounded by the caps, not by what the
//! agent made (a million empty files in one directory cost no more than ten
//! thousand). Blocking; run it in `spawn_blocking`.

use std::path::Path;

use rustix::fs::FileType;
use sandbox::sync::beneath::kind;

use super::{
    Limits, QuotaExceeded,
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
    /// Names read from the directories (every kind, ignored ones too): never
    /// more than the file cap.
    pub entries: u64,
    /// Bytes of the files found.
    pub bytes: u64,
    /// The cap that stopped the walk: what is past it was not seen.
    pub over_quota: Option<QuotaExceeded>,
}

impl Walk {
    /// Whether a cap stopped the walk.
    pub fn truncated(&self) -> bool {
        self.over_quota.is_some()
    }
}

/// Whether a directory or file name is never synced.
pub fn ignored(name: &str) -> bool {
    super::IGNORED.contains(&name)
}

/// Walks `root` depth-first. Each directory is opened below `root` refusing
/// symlinks on the way ([`Beneath::dir`]) and its entries are described by `lstat`
/// relative to that descriptor, so a directory swapped for a symlink meanwhile is
/// skipped, never followed. Every name read counts against `limits.max_files`
/// (files, directories, links and all: what a filesystem quota on inodes counts),
/// the bytes of regular files against `limits.max_total_bytes`; the walk stops at
/// the first cap it reaches. Which files a stopped walk found depends on the order
/// the filesystem lists them in.
pub fn walk(root: &Beneath, limits: &Limits) -> std::io::Result<Walk> {
    let mut out = Walk::default();
    // (its stored prefix, its depth): paths, not open directories, so a wide tree
    // holds no descriptor per pending directory.
    let mut stack = vec![(String::new(), 0usize)];
    while let Some((prefix, depth)) = stack.pop() {
        let dir = match root.dir(Path::new(prefix.trim_end_matches('/'))) {
            Ok(dir) => dir,
            Err(e) if prefix.is_empty() => return Err(e),
            Err(_) => {
                out.skipped += 1;
                continue;
            }
        };
        let entries = match dir.each_entry() {
            Ok(entries) => entries,
            Err(e) if prefix.is_empty() => return Err(e),
            Err(_) => {
                out.skipped += 1;
                continue;
            }
        };
        for entry in entries {
            let Ok((name, stat)) = entry else {
                out.skipped += 1;
                break;
            };
            if out.entries >= limits.max_files {
                out.over_quota = Some(QuotaExceeded::Files);
                break;
            }
            out.entries += 1;
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
                    stack.push((format!("{path}/"), depth + 1));
                }
            } else if kind == FileType::RegularFile {
                let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
                if size > limits.max_file_bytes {
                    out.skipped += 1;
                } else if out.bytes.saturating_add(size) > limits.max_total_bytes {
                    out.over_quota = Some(QuotaExceeded::Bytes);
                    break;
                } else {
                    out.bytes += size;
                    out.files.push(Found { path, size });
                }
            } else {
                // Symlinks, FIFOs, sockets, devices.
                out.skipped += 1;
            }
        }
        if out.over_quota.is_some() {
            break;
        }
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
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
        assert!(!w.truncated());

        let limits = Limits {
            max_files: 3,
            ..Limits::default()
        };
        let w = walk(&Beneath::open(root).expect("open"), &limits).expect("walk");
        assert_eq!(w.entries, 3);
        assert_eq!(w.over_quota, Some(QuotaExceeded::Files));

        let limits = Limits {
            max_total_bytes: 2048,
            ..Limits::default()
        };
        let w = walk(&Beneath::open(root).expect("open"), &limits).expect("walk");
        assert!(w.bytes <= 2048, "{w:?}");
        assert_eq!(w.over_quota, Some(QuotaExceeded::Bytes));
    }

    /// This process's peak resident memory since the last [`reset_peak`], KiB.
    fn peak_kib() -> u64 {
        let status = fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    fn reset_peak() {
        fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    }

    /// The figures of issue 15's finding 5: run with
    /// `cargo test -p router --lib memory_of_walks -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check: prints peak memory"]
    fn memory_of_walks_over_200k_empty_files() {
        let dir = tempfile::tempdir().expect("dir");
        let many = dir.path().join("many");
        fs::create_dir(&many).expect("mkdir");
        for i in 0..200_000 {
            fs::File::create(many.join(format!("empty-file-{i}"))).expect("create");
        }
        let root = Beneath::open(dir.path()).expect("open");
        reset_peak();
        let base = peak_kib();
        let w = walk(&root, &Limits::default()).expect("walk");
        let walked = peak_kib();
        eprintln!(
            "streaming walk: {} names read, {} files kept, peak +{} KiB",
            w.entries,
            w.files.len(),
            walked.saturating_sub(base)
        );
        drop(w);
        reset_peak();
        let base = peak_kib();
        // What the walk did before: list the whole directory, sort it, then cap.
        let mut all = root
            .dir(Path::new("many"))
            .and_then(|d| d.entries())
            .expect("list");
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let listed = peak_kib();
        eprintln!(
            "collect-then-cap (before): {} names held, peak +{} KiB",
            all.len(),
            listed.saturating_sub(base)
        );
    }

    #[test]
    fn a_directory_of_very_many_files_is_read_only_up_to_the_cap() {
        let dir = tempfile::tempdir().expect("dir");
        let many = dir.path().join("many");
        fs::create_dir(&many).expect("mkdir");
        for i in 0..20_000 {
            fs::File::create(many.join(format!("f{i}"))).expect("create");
        }
        let limits = Limits {
            max_files: 1_000,
            ..Limits::default()
        };
        let w = walk(&Beneath::open(dir.path()).expect("open"), &limits).expect("walk");
        assert_eq!(w.entries, 1_000, "names read past the cap");
        assert_eq!(w.files.len(), 999, "one entry is the directory itself");
        assert_eq!(w.over_quota, Some(QuotaExceeded::Files));
    }
}
