//! Files below a directory that a less trusted process may be changing while we
//! work in it: the agent in its own workspace while the router (root) writes there,
//! or reads it for a sync. The one implementation: the router's uploads, host-side
//! sync and restore, and the pods' own restore all go through it.
//!
//! Everything starts from a directory descriptor opened once ([`Beneath::open`]).
//! Paths below it are resolved by the kernel with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: a symlink or `..` anywhere on the
//! way (also a directory swapped for a symlink a moment ago) fails the call instead
//! of leading out. Creating, renaming, linking and removing act on one name in a
//! directory descriptor we hold, never on a path resolved again later, so a swap
//! after the check changes nothing we touch. Files are opened non-blocking and
//! checked with `fstat` on the descriptor itself: anything but a regular file (a
//! FIFO, a socket, a device) is refused before a byte is read, and an open never
//! waits for a FIFO's writer. Linux ≥ 5.6 (`openat2`).

use std::{
    ffi::{OsStr, OsString},
    fs::{self, File},
    io,
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Component, Path, PathBuf},
};

use rustix::fs::{AtFlags, Dir, FileType, Gid, Mode, OFlags, RenameFlags, ResolveFlags, Stat, Uid};

/// Names of the temporary files [`Beneath::create`] makes (never synced).
pub const TEMP_PREFIX: &str = ".jarvis-restore-";

/// How every path below the directory is resolved.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// How directories are opened.
const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// How files are opened for reading: never blocking (a FIFO), never becoming a
/// controlling terminal.
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY);

fn refused(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Whether `rel` is a path of plain names (no root, `.` or `..`), or empty.
fn plain(rel: &Path) -> io::Result<()> {
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(())
    } else {
        Err(refused("not a relative path of plain names"))
    }
}

/// The kind of file a `stat` describes.
pub fn kind(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// An open directory; every path given to its methods is resolved below it.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
}

impl AsFd for Beneath {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Beneath {
    /// Opens the directory at `path`, a path the caller trusts (its own data
    /// directory), not following a symlink as its last component.
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty())?;
        Ok(Self { fd })
    }

    /// The existing directory `rel` below this one (this one again when `rel` is
    /// empty).
    pub fn dir(&self, rel: &Path) -> io::Result<Self> {
        plain(rel)?;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let fd = rustix::fs::openat2(&self.fd, rel, DIR_FLAGS, Mode::empty(), RESOLVE)?;
        Ok(Self { fd })
    }

    /// The directory `rel` below this one, made (mode 0755) where missing; every
    /// directory on the way is handed to `owner` (uid, gid) when it belongs to
    /// someone else. An existing component that is not a real directory (a
    /// symlink, a file) is refused.
    pub fn make_dirs(&self, rel: &Path, owner: Option<(u32, u32)>) -> io::Result<Self> {
        plain(rel)?;
        let mut dir = self.dir(Path::new(""))?;
        for part in rel.components() {
            let name = part.as_os_str();
            let next = match rustix::fs::openat2(&dir.fd, name, DIR_FLAGS, Mode::empty(), RESOLVE) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir.fd, name, Mode::from_raw_mode(0o755)) {
                        // Made meanwhile (a concurrent restore): fine if it is a
                        // real directory, which the open below checks.
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rustix::fs::openat2(&dir.fd, name, DIR_FLAGS, Mode::empty(), RESOLVE)?
                }
                Err(e) => return Err(e.into()),
            };
            if let Some((uid, gid)) = owner {
                hand_to(&next, uid, gid)?;
            }
            dir = Self { fd: next };
        }
        Ok(dir)
    }

    /// Opens the regular file `rel` for reading; its metadata from the open
    /// descriptor. Anything else (a directory, a FIFO, a device, a symlink on the
    /// way) is refused without blocking or reading.
    pub fn open_file(&self, rel: &Path) -> io::Result<(File, fs::Metadata)> {
        plain(rel)?;
        let fd = rustix::fs::openat2(&self.fd, rel, READ_FLAGS, Mode::empty(), RESOLVE)?;
        let file = File::from(fd);
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(refused("not a regular file"));
        }
        Ok((file, meta))
    }

    /// What is at `rel` (a symlink there is described, not followed); `None` when
    /// nothing is. A symlink on the way is an error.
    pub fn stat(&self, rel: &Path) -> io::Result<Option<Stat>> {
        let (parent, name) = split(rel)?;
        let dir = match self.dir(parent) {
            Ok(dir) => dir,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The entries of this directory (not `.` and `..`), each with what `lstat`
    /// says of it (`None` when it vanished meanwhile). Collects them all: for a
    /// directory the agent filled, use [`Beneath::each_entry`].
    pub fn entries(&self) -> io::Result<Vec<(OsString, Option<Stat>)>> {
        self.each_entry()?.collect()
    }

    /// The entries of this directory one at a time, in the order the filesystem
    /// lists them, as [`Beneath::entries`] describes them: memory stays the same
    /// however many entries the directory holds (an agent can make millions).
    pub fn each_entry(&self) -> io::Result<Entries<'_>> {
        Ok(Entries {
            dir: Dir::read_from(&self.fd)?,
            parent: self,
        })
    }

    /// Gives everything below this directory that is not yet `owner`'s (uid, gid)
    /// to it (files restored from storage before the sandbox starts). Each entry
    /// is changed by name in its held directory, a symlink itself and never what
    /// it points at; directories are entered below this one, refusing symlinks.
    /// Entries that vanish meanwhile are skipped.
    pub fn hand_over_all(&self, owner: (u32, u32)) -> io::Result<()> {
        let (uid, gid) = owner;
        // Relative paths, not open directories: a wide tree must not hold a
        // descriptor per pending directory.
        let mut pending = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            let dir = match self.dir(&rel) {
                Ok(dir) => dir,
                Err(e) if gone(&e) && !rel.as_os_str().is_empty() => continue,
                Err(e) => return Err(e),
            };
            for entry in dir.each_entry()? {
                let (name, stat) = entry?;
                let Some(stat) = stat else { continue };
                if stat.st_uid != uid || stat.st_gid != gid {
                    match rustix::fs::chownat(
                        &dir.fd,
                        name.as_os_str(),
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    ) {
                        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if kind(&stat) == FileType::Directory {
                    pending.push(rel.join(&name));
                }
            }
        }
        Ok(())
    }

    /// Removes the file or symlink at `rel` (never a directory, never through a
    /// symlink); `false` when there was nothing to remove.
    pub fn remove_file(&self, rel: &Path) -> io::Result<bool> {
        let (parent, name) = split(rel)?;
        let dir = match self.dir(parent) {
            Ok(dir) => dir,
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        match rustix::fs::unlinkat(&dir.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(
                rustix::io::Errno::NOENT | rustix::io::Errno::ISDIR | rustix::io::Errno::NOTDIR,
            ) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts writing the file `rel`: its parent directories are made (see
    /// [`Beneath::make_dirs`]), and a new file is created under a temporary name in
    /// the parent, handed to `owner` by its descriptor; [`Pending::commit`] or
    /// [`Pending::commit_new`] puts it in place.
    pub fn create(&self, rel: &Path, owner: Option<(u32, u32)>) -> io::Result<Pending> {
        let (parent, name) = split(rel)?;
        let dir = self.make_dirs(parent, owner)?;
        let temp = OsString::from(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4()));
        let fd = rustix::fs::openat(
            &dir.fd,
            &temp,
            OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::EXCL
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | OFlags::NOCTTY,
            Mode::from_raw_mode(0o644),
        )?;
        let pending = Pending {
            file: File::from(fd),
            dir,
            temp,
            name: name.to_os_string(),
        };
        if let Some((uid, gid)) = owner
            && let Err(e) = hand_to(&pending.file, uid, gid)
        {
            pending.discard();
            return Err(e);
        }
        Ok(pending)
    }
}

/// The entries of a directory, read as they are asked for (see [`Beneath::each_entry`]).
#[derive(Debug)]
pub struct Entries<'a> {
    dir: Dir,
    parent: &'a Beneath,
}

impl Iterator for Entries<'_> {
    type Item = io::Result<(OsString, Option<Stat>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.dir.next()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e.into())),
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let stat = rustix::fs::statat(
                &self.parent.fd,
                entry.file_name(),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .ok();
            return Some(Ok((OsStr::from_bytes(name).to_os_string(), stat)));
        }
    }
}

/// Gives the open file or directory `fd` to `uid`:`gid` unless it is theirs.
fn hand_to(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    let stat = rustix::fs::fstat(&fd)?;
    if stat.st_uid != uid || stat.st_gid != gid {
        rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    Ok(())
}

/// `rel` as its parent (possibly empty) and last name.
fn split(rel: &Path) -> io::Result<(&Path, &OsStr)> {
    plain(rel)?;
    let name = rel.file_name().ok_or_else(|| refused("no file name"))?;
    Ok((rel.parent().unwrap_or(Path::new("")), name))
}

/// Errors that mean "nothing is there": missing, or a file or symlink where a
/// directory was expected.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP)
    )
}

/// A new file written under a temporary name in its (held) parent directory,
/// until it is put in place or discarded.
#[derive(Debug)]
pub struct Pending {
    /// The open temporary file, to write.
    pub file: File,
    dir: Beneath,
    temp: OsString,
    name: OsString,
}

impl Pending {
    /// Renames the written file over whatever is at its name (a symlink there is
    /// replaced, not followed); a directory in the way is an error
    /// ([`io::ErrorKind::IsADirectory`]) and the temporary file goes.
    pub fn commit(self) -> io::Result<()> {
        let renamed = rustix::fs::renameat(&self.dir.fd, &self.temp, &self.dir.fd, &self.name);
        if let Err(e) = renamed {
            self.remove_temp();
            return Err(match e {
                rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST => {
                    rustix::io::Errno::ISDIR.into()
                }
                e => e.into(),
            });
        }
        Ok(())
    }

    /// Puts the written file at its name only if nothing is there yet; `false`
    /// when something is (it is left alone, the temporary file goes).
    pub fn commit_new(self) -> io::Result<bool> {
        let renamed = rustix::fs::renameat_with(
            &self.dir.fd,
            &self.temp,
            &self.dir.fd,
            &self.name,
            RenameFlags::NOREPLACE,
        );
        let result = match renamed {
            Ok(()) => return Ok(true),
            // A filesystem without RENAME_NOREPLACE: a link fails just the same
            // when the name is taken.
            Err(rustix::io::Errno::INVAL) => rustix::fs::linkat(
                &self.dir.fd,
                &self.temp,
                &self.dir.fd,
                &self.name,
                AtFlags::empty(),
            ),
            Err(e) => Err(e),
        };
        self.remove_temp();
        match result {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the temporary file.
    pub fn discard(self) {
        self.remove_temp();
    }

    fn remove_temp(&self) {
        let _ = rustix::fs::unlinkat(&self.dir.fd, &self.temp, AtFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, Beneath) {
        let dir = tempfile::tempdir().expect("dir");
        let beneath = Beneath::open(dir.path()).expect("open");
        (dir, beneath)
    }

    #[test]
    fn symlinks_and_dot_dots_on_the_way_are_refused() {
        let (dir, root) = root();
        let outside = tempfile::tempdir().expect("dir");
        fs::write(outside.path().join("secret"), b"s").expect("write");
        symlink(outside.path(), dir.path().join("link")).expect("symlink");
        symlink(outside.path().join("secret"), dir.path().join("secret")).expect("symlink");
        assert!(root.open_file(Path::new("link/secret")).is_err());
        assert!(root.open_file(Path::new("secret")).is_err());
        assert!(root.open_file(Path::new("../x")).is_err());
        assert!(root.dir(Path::new("link")).is_err());
        assert!(root.make_dirs(Path::new("link/sub"), None).is_err());
        assert!(root.create(Path::new("link/new"), None).is_err());
        assert!(
            !root
                .remove_file(Path::new("link/secret"))
                .expect("no error")
        );
        assert!(outside.path().join("secret").exists());
        assert!(!outside.path().join("new").exists());
        assert!(!outside.path().join("sub").exists());
    }

    #[test]
    fn handing_over_changes_the_tree_and_symlinks_but_never_their_targets() {
        use std::os::unix::fs::MetadataExt;
        let (dir, root) = root();
        let outside = tempfile::tempdir().expect("dir");
        let target = outside.path().join("target");
        fs::write(&target, b"t").expect("write");
        fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        fs::write(dir.path().join("a/b/file"), b"f").expect("write");
        symlink(&target, dir.path().join("a/link")).expect("symlink");
        symlink(outside.path(), dir.path().join("dirlink")).expect("symlink");
        let before = fs::metadata(&target).expect("target").uid();
        let owner = (65_534, 65_534);
        root.hand_over_all(owner).expect("handed over");
        for rel in ["a", "a/b", "a/b/file", "a/link", "dirlink"] {
            let meta = fs::symlink_metadata(dir.path().join(rel)).expect("meta");
            assert_eq!((meta.uid(), meta.gid()), owner, "{rel}");
        }
        assert_eq!(fs::metadata(&target).expect("target").uid(), before);
        assert_eq!(fs::metadata(outside.path()).expect("outside").uid(), before);
    }

    #[test]
    fn a_fifo_is_refused_at_once_never_waited_on() {
        let (dir, root) = root();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .expect("mkfifo");
        let started = std::time::Instant::now();
        let err = root.open_file(Path::new("fifo")).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_created_file_replaces_a_symlink_or_yields_to_what_is_there() {
        let (dir, root) = root();
        let outside = tempfile::tempdir().expect("dir");
        symlink(outside.path().join("t"), dir.path().join("a")).expect("symlink");
        let mut pending = root.create(Path::new("a"), None).expect("create");
        io::Write::write_all(&mut pending.file, b"new").expect("write");
        pending.commit().expect("commit");
        assert_eq!(fs::read(dir.path().join("a")).expect("read"), b"new");
        assert!(!outside.path().join("t").exists());

        let pending = root.create(Path::new("sub/b"), None).expect("create");
        assert!(pending.commit_new().expect("linked"));
        let pending = root.create(Path::new("sub/b"), None).expect("create");
        assert!(!pending.commit_new().expect("taken"));
        fs::create_dir(dir.path().join("d")).expect("mkdir");
        fs::write(dir.path().join("d/x"), b"").expect("write");
        let pending = root.create(Path::new("d"), None).expect("create");
        let err = pending.commit().expect_err("a directory in the way");
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["b"], "no temporary file is left");
    }
}
