//! The warm pool of the local backend: sandboxes started before anyone needs
//! them, each in a jail of its own as a uid of its own (reserved in
//! `warm_slots`, [`uids::reserve_slot`]), with directories of its own under
//! `<workspaces>/.pool/<uid>` and `<run>/.pool/<uid>`, started unassigned
//! (`--claim-secret`) with a spare CLI already running (`--spare-agent`).
//!
//! A claim ([`move_in`], then [`claim_request`]): the waking user's files and
//! agent state are moved into the slot's directories (renames on one
//! filesystem, from directory descriptors, never through a symlink; the user's
//! entries win), handed to the slot's uid, the uid and a new workspace token
//! become the workspace's in one statement ([`uids::claim_slot`]), the slot's directories are renamed to
//! the user's (a bind mount follows the directory, so the running jail sees
//! the same directories), and the sandbox is told the workspace token over its
//! socket (`POST /v1/claim` with the slot's secret: the same request a pod
//! would get). One task ([`keep_filled`]) fills the pool at start and refills
//! it after each claim: one sandbox at a time, so refills never compete with a
//! burst of wakes; [`REFILL_PAUSE`] after the first claim from a full pool,
//! so they do not compete with the claiming user's first turn either;
//! and at a low priority (niceness 10 for the whole jail, set back to 0 by the
//! claim). A slot whose sandbox died is replaced. The pool's sandboxes stop
//! with the router (their reapers kill them when the pool is dropped; a
//! jail dies with its parent anyway), and a router that starts again frees the
//! slots it finds left on disk.

use std::{
    collections::VecDeque,
    ffi::OsStr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rustix::fs::{AtFlags, FileType};
use sandbox::sync::beneath::{Beneath, kind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{LocalConfig, Running, hand_over, jail, launch, owned_dir, spec, uids};
use crate::workspaces::{Error, Result, tokens};

/// Pause after a claim before its slot is replaced.
const REFILL_PAUSE: Duration = Duration::from_secs(2);

/// Pause after a slot failed to start, before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often the pool looks for slots whose sandbox died.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for a sandbox to answer its claim.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// The niceness pool sandboxes start at (their CLIs' start-up yields to the
/// users' turns); a claim sets it back to 0.
const REFILL_NICENESS: i32 = 10;
/// The directory, under the workspaces and run directories, of the slots.
const POOL_DIR: &str = ".pool";

/// Started, unclaimed sandboxes.
pub(super) struct Pool {
    size: usize,
    ready: Mutex<VecDeque<Slot>>,
    dead: Mutex<Vec<Slot>>,
    refill: Notify,
}

/// One unclaimed sandbox.
pub(super) struct Slot {
    /// Its host uid (reserved in `warm_slots`).
    pub uid: u32,
    /// What its claim must present.
    pub secret: String,
    /// `<workspaces>/.pool/<uid>`: its `workspace` and `state` directories.
    pub home: PathBuf,
    /// `<run>/.pool/<uid>`: its socket's directory.
    pub run: PathBuf,
    /// Its reaper.
    pub running: Running,
}

impl Pool {
    /// A pool of `size` slots, empty until [`keep_filled`] runs.
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            ready: Mutex::default(),
            dead: Mutex::default(),
            refill: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Slot>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Slots whose sandbox runs, now.
    pub fn ready(&self) -> usize {
        self.sweep();
        self.lock().len()
    }

    /// A slot whose sandbox runs, if any; the refill task is woken.
    pub fn take(&self) -> Option<Slot> {
        self.sweep();
        let slot = self.lock().pop_front();
        self.refill.notify_one();
        slot
    }

    /// Moves the slots whose sandbox died to `dead` (freed by the refill task).
    fn sweep(&self) {
        let dead: Vec<Slot> = {
            let mut ready = self.lock();
            let (mut alive, mut dead) = (VecDeque::new(), Vec::new());
            for mut slot in ready.drain(..) {
                if slot.running.is_running() {
                    alive.push_back(slot);
                } else {
                    dead.push(slot);
                }
            }
            *ready = alive;
            dead
        };
        if !dead.is_empty() {
            tracing::warn!(slots = dead.len(), "warm sandboxes died; replacing them");
            self.dead
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(dead);
            self.refill.notify_one();
        }
    }
}

/// Fills `pool` and keeps it full, one sandbox at a time, until `cancel`.
pub(super) async fn keep_filled(
    pool: Arc<Pool>,
    config: LocalConfig,
    db: sqlx::PgPool,
    cancel: CancellationToken,
) {
    free_leftovers(&config, &db).await;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let dead: Vec<Slot> =
            std::mem::take(&mut *pool.dead.lock().unwrap_or_else(|e| e.into_inner()));
        for slot in dead {
            discard(slot, &db).await;
        }
        if pool.ready() < pool.size {
            let started = tokio::select! {
                started = start_slot(&config, &db) => started,
                () = cancel.cancelled() => return,
            };
            match started {
                Ok(slot) => {
                    tracing::debug!(uid = slot.uid, "warm sandbox ready");
                    pool.lock().push_back(slot);
                }
                Err(error) => {
                    tracing::warn!(error = ?error, "a warm sandbox did not start; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                        () = cancel.cancelled() => return,
                    }
                }
            }
            continue;
        }
        tokio::select! {
            () = pool.refill.notified() => {
                // A claim (or a slot found dead): the claiming user's first
                // turn runs before the refill competes with it for the CPU.
                tokio::select! {
                    () = tokio::time::sleep(REFILL_PAUSE) => {}
                    () = cancel.cancelled() => return,
                }
            }
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = cancel.cancelled() => return,
        }
    }
}

fn slot_dirs(config: &LocalConfig, uid: u32) -> (PathBuf, PathBuf) {
    (
        config.workspaces_dir.join(POOL_DIR).join(uid.to_string()),
        config.run_dir.join(POOL_DIR).join(uid.to_string()),
    )
}

/// Starts one unassigned sandbox.
async fn start_slot(config: &LocalConfig, db: &sqlx::PgPool) -> Result<Slot> {
    let uid = uids::reserve_slot(db, config.uids)
        .await
        .map_err(|e| Error::Uid(Box::new(e)))?;
    let (home, run) = slot_dirs(config, uid);
    let started = async {
        for dir in [&home, &run] {
            remove_all(dir)?;
        }
        let (workspace, state) = (home.join("workspace"), home.join("state"));
        for dir in [&home, &workspace, &state, &run] {
            owned_dir(dir, uid, uid)?;
        }
        let secret = tokens::generate();
        let spec = spec(config, workspace, state, run.clone());
        let running = launch(
            config,
            &spec,
            (uid, uid),
            jail::claim_args(&secret),
            (format!("warm slot {uid}"), Some(REFILL_NICENESS)),
        )
        .await?;
        Ok(Slot {
            uid,
            secret,
            home: home.clone(),
            run: run.clone(),
            running,
        })
    }
    .await;
    if started.is_err() {
        let _ = remove_all(&home);
        let _ = remove_all(&run);
        if let Err(error) = uids::release_slot(db, uid).await {
            tracing::warn!(uid, %error, "freeing a warm slot's uid failed");
        }
    }
    started
}

/// Stops an unclaimed slot's sandbox, removes its directories, frees its uid.
pub(super) async fn discard(slot: Slot, db: &sqlx::PgPool) {
    let Slot {
        uid,
        home,
        run,
        running,
        ..
    } = slot;
    running.stop().await;
    for dir in [&home, &run] {
        if let Err(error) = remove_all(dir) {
            tracing::warn!(uid, %error, dir = %dir.display(), "removing a warm slot's directory failed");
        }
    }
    if let Err(error) = uids::release_slot(db, uid).await {
        tracing::warn!(uid, %error, "freeing a warm slot's uid failed");
    }
}

/// Frees the slots a previous run of the router left (their sandboxes died
/// with it): directories removed, uids released.
async fn free_leftovers(config: &LocalConfig, db: &sqlx::PgPool) {
    for root in [
        config.workspaces_dir.join(POOL_DIR),
        config.run_dir.join(POOL_DIR),
    ] {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(uid) = name.to_str().and_then(|n| n.parse::<u32>().ok())
                && let Err(error) = uids::release_slot(db, uid).await
            {
                tracing::warn!(uid, %error, "freeing a left warm slot's uid failed");
            }
            if let Err(error) = remove_all(&entry.path()) {
                tracing::warn!(%error, "removing a left warm slot failed");
            }
        }
    }
}

/// Where a user's directories are (the claim's destination).
pub(super) struct UserDirs {
    /// `<workspaces>/<user>`.
    pub home: PathBuf,
    /// `<workspaces>/<user>/workspace`.
    pub workspace: PathBuf,
    /// `<workspaces>/<user>/state`.
    pub state: PathBuf,
    /// `<run>/<user>`.
    pub run: PathBuf,
}

/// Makes `slot`'s directories `user`'s: their files moved in and handed to the
/// slot's uid, the uid made the workspace's and `token` its workspace token (one
/// statement), the directories renamed to the user's. On a failure before the
/// uid changed, the files go back to the user's
/// directories (as `previous`, the workspace's uid until now).
pub(super) async fn move_in(
    slot: &Slot,
    dirs: UserDirs,
    db: &sqlx::PgPool,
    user: Uuid,
    previous: Option<(u32, u32)>,
    token: &str,
) -> Result<()> {
    let uid = slot.uid;
    let (slot_workspace, slot_state) = (slot.home.join("workspace"), slot.home.join("state"));
    let pairs = [
        (dirs.workspace.clone(), slot_workspace.clone()),
        (dirs.state.clone(), slot_state.clone()),
    ];
    let trash = slot.home.join("trash");
    let started = std::time::Instant::now();
    let moved = {
        let (pairs, trash) = (pairs.clone(), trash.clone());
        blocking(move || {
            for (from, to) in &pairs {
                merge_dirs(from, to, &trash)?;
                hand_over(to, uid, uid)?;
            }
            Ok(())
        })
        .await
    };
    let files = started.elapsed();
    let claimed = match moved {
        Ok(()) => uids::claim_slot(db, user, uid, token)
            .await
            .map_err(|e| Error::Uid(Box::new(e)))
            .and_then(|claimed| {
                claimed.then_some(()).ok_or_else(|| {
                    Error::NotReady("the warm slot's uid reservation is gone".into())
                })
            }),
        Err(e) => Err(e),
    };
    if let Err(error) = claimed {
        // Back where they were, the user's again.
        let back = blocking(move || {
            for (user_dir, slot_dir) in &pairs {
                std::fs::create_dir_all(user_dir)
                    .map_err(prepare_error("the user's directory", user_dir))?;
                merge_dirs(slot_dir, user_dir, &trash)?;
                if let Some((uid, gid)) = previous {
                    hand_over(user_dir, uid, gid)?;
                }
            }
            Ok(())
        })
        .await;
        if let Err(back) = back {
            tracing::error!(user.id = %user, error = ?back, "the user's files could not be moved back from a failed warm claim");
        }
        return Err(error);
    }
    let claimed_at = started.elapsed();
    let (slot_home, slot_run) = (slot.home.clone(), slot.run.clone());
    let renamed = blocking(move || {
        remove_all(&slot_home.join("trash"))?;
        remove_all(&dirs.home)?;
        rename(&slot_home, &dirs.home)?;
        remove_all(&dirs.run)?;
        rename(&slot_run, &dirs.run)
    })
    .await
    .inspect_err(|error| {
        tracing::error!(user.id = %user, uid, error = ?error, "a claimed warm slot's directories could not be renamed to the user's");
    });
    tracing::debug!(
        user.id = %user,
        uid,
        files_ms = files.as_secs_f64() * 1e3,
        claim_slot_ms = (claimed_at - files).as_secs_f64() * 1e3,
        rename_ms = (started.elapsed() - claimed_at).as_secs_f64() * 1e3,
        "files moved into the warm slot"
    );
    renamed
}

/// Tells the sandbox behind `socket` that it is the workspace's of `token`
/// (`POST /v1/claim`, bearer `secret`).
pub(super) async fn claim_request(socket: &Path, secret: &str, token: &str) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let request = async {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        let body = serde_json::json!({ "token": token }).to_string();
        let request = hyper::Request::post("/v1/claim")
            .header(hyper::header::HOST, "sandbox")
            .header(hyper::header::AUTHORIZATION, format!("Bearer {secret}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(std::io::Error::other)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        if response.status() == hyper::StatusCode::NO_CONTENT {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "the sandbox answered its claim with {}",
                response.status()
            )))
        }
    };
    tokio::time::timeout(CLAIM_TIMEOUT, request)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to the claim"))?
}

async fn blocking<F>(f: F) -> Result<()>
where
    F: FnOnce() -> Result<()> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::NotReady(format!("a claim's file work panicked: {e}")))?
}

fn prepare_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Prepare { what, path, source }
}

/// Removes `path` and everything below it (never through a symlink); nothing
/// there is fine.
fn remove_all(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(prepare_error("a warm slot's directory", path)(e))
        }
        _ => Ok(()),
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(prepare_error("a claimed warm slot's directory", to))
}

/// Moves everything in `from` into `to` (one filesystem), `from`'s entries
/// winning: directories on both sides are merged, anything else in `to` of the
/// same name is moved to `trash` first. Works from directory descriptors and
/// never follows a symlink (one is moved as itself). A missing `from` is empty.
fn merge_dirs(from: &Path, to: &Path, trash: &Path) -> Result<()> {
    let source = match Beneath::open(from) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(prepare_error("the user's files", from)(e)),
    };
    let target = Beneath::open(to).map_err(prepare_error("a warm slot's directory", to))?;
    std::fs::create_dir_all(trash).map_err(prepare_error("a warm slot's trash", trash))?;
    let trash = Beneath::open(trash).map_err(prepare_error("a warm slot's trash", trash))?;
    merge(&source, &target, &trash).map_err(prepare_error("the user's files", from))
}

fn merge(from: &Beneath, to: &Beneath, trash: &Beneath) -> std::io::Result<()> {
    for (name, stat) in from.entries()? {
        let Some(stat) = stat else { continue };
        let name: &OsStr = &name;
        let existing = to.stat(Path::new(name))?;
        let both_dirs = kind(&stat) == FileType::Directory
            && existing
                .as_ref()
                .is_some_and(|s| kind(s) == FileType::Directory);
        if both_dirs {
            let (inner_from, inner_to) = (from.dir(Path::new(name))?, to.dir(Path::new(name))?);
            merge(&inner_from, &inner_to, trash)?;
            rustix::fs::unlinkat(from, name, AtFlags::REMOVEDIR)?;
            continue;
        }
        if existing.is_some() {
            let aside = Uuid::new_v4().to_string();
            rustix::fs::renameat(to, name, trash, aside.as_str())?;
        }
        rustix::fs::renameat(from, name, to, name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_moves_everything_in_the_users_entries_winning_and_follows_no_symlink() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (from, to, trash, outside) = (
            tmp.path().join("user"),
            tmp.path().join("slot"),
            tmp.path().join("trash"),
            tmp.path().join("outside"),
        );
        for dir in [&from, &to, &outside] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::create_dir_all(from.join(".claude/projects/-workspace")).expect("mkdir");
        std::fs::write(from.join(".claude/projects/-workspace/c.jsonl"), "history").expect("w");
        std::fs::write(from.join(".claude.json"), "user's").expect("w");
        std::fs::write(from.join("notes.txt"), "mine").expect("w");
        std::os::unix::fs::symlink(&outside, from.join("link")).expect("symlink");
        // The slot's own start-up files, and a symlink planted where the user's
        // directory goes.
        std::fs::create_dir_all(to.join(".claude/projects/-workspace")).expect("mkdir");
        std::fs::write(to.join(".claude/projects/-workspace/s.jsonl"), "spare").expect("w");
        std::fs::write(to.join(".claude.json"), "slot's").expect("w");
        std::os::unix::fs::symlink(&outside, to.join("notes.txt")).expect("symlink");
        merge_dirs(&from, &to, &trash).expect("merged");
        let read = |p: &str| std::fs::read_to_string(to.join(p)).expect(p);
        assert_eq!(read(".claude/projects/-workspace/c.jsonl"), "history");
        assert_eq!(read(".claude/projects/-workspace/s.jsonl"), "spare");
        assert_eq!(read(".claude.json"), "user's");
        assert_eq!(read("notes.txt"), "mine");
        assert!(
            std::fs::symlink_metadata(to.join("notes.txt"))
                .expect("stat")
                .is_file()
        );
        assert!(
            std::fs::symlink_metadata(to.join("link"))
                .expect("stat")
                .is_symlink(),
            "moved as itself"
        );
        assert_eq!(
            std::fs::read_dir(&outside).expect("outside").count(),
            0,
            "nothing written through a symlink"
        );
        assert_eq!(
            std::fs::read_dir(&from).expect("from").count(),
            0,
            "all moved"
        );
    }
}
