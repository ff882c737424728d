//! A hostile agent's moves on a workspace directory, for tests of the code that
//! works in it as root: swapping an entry with another in a loop
//! (`renameat2(RENAME_EXCHANGE)`, as an agent can in its own directory), making
//! FIFOs, and watching a directory outside the workspace for anything done to it
//! (inotify: opened, read, created, linked or moved into).

use std::{
    ffi::OsString,
    fs,
    mem::MaybeUninit,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use rustix::fs::{FileType, Mode, RenameFlags, inotify};

/// A thread exchanging two names of one directory as fast as it can.
pub struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
    a: OsString,
    b: OsString,
}

impl Swapper {
    /// Starts exchanging `dir/a` and `dir/b` (both must exist).
    pub fn start(dir: &Path, a: &str, b: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let dir_fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
            Mode::empty(),
        )
        .expect("open the directory");
        let thread = {
            let (stop, swaps, a, b) = (stop.clone(), swaps.clone(), a.to_string(), b.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    rustix::fs::renameat_with(&dir_fd, &a, &dir_fd, &b, RenameFlags::EXCHANGE)
                        .expect("exchange");
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Self {
            stop,
            swaps,
            thread: Some(thread),
            dir: dir.to_path_buf(),
            a: a.into(),
            b: b.into(),
        }
    }

    /// Stops swapping; returns how many exchanges happened. `dir/a` is back to
    /// what it was at the start.
    pub fn stop(mut self) -> u64 {
        self.halt();
        let swaps = self.swaps.load(Ordering::Relaxed);
        if swaps % 2 == 1 {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                self.dir.join(&self.a),
                rustix::fs::CWD,
                self.dir.join(&self.b),
                RenameFlags::EXCHANGE,
            )
            .expect("exchange back");
        }
        swaps
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("swapper thread");
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Everything done to the entries of a directory, as inotify reports it.
pub struct Watch {
    fd: OwnedFd,
}

impl Watch {
    /// Starts watching `dir` (and what is in it) for opens, reads, creations,
    /// links, renames into it and attribute changes.
    pub fn start(dir: &Path) -> Self {
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .expect("inotify");
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::OPEN
                | inotify::WatchFlags::ACCESS
                | inotify::WatchFlags::CREATE
                | inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::ATTRIB
                | inotify::WatchFlags::MODIFY,
        )
        .expect("watch");
        Self { fd }
    }

    /// The events seen so far, as readable lines (`name: flags`).
    pub fn events(&self) -> Vec<String> {
        let mut buf = [MaybeUninit::uninit(); 8192];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut out = Vec::new();
        while let Ok(event) = reader.next() {
            let name = event
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| ".".into());
            out.push(format!("{name}: {:?}", event.events()));
        }
        out
    }
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        FileType::Fifo,
        Mode::from_raw_mode(0o666),
        0,
    )
    .expect("mkfifo");
}

/// Lets any reader blocked in `open()` on the FIFO at `path` go on (it then
/// reads end of file): opens it for writing without blocking and closes it.
pub fn release_fifo(path: &Path) {
    let _ = rustix::fs::open(
        path,
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK,
        Mode::empty(),
    );
}

/// Every entry of `dir`, by name.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
