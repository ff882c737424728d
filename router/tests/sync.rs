//! Workspace files and agent state ⇄ storage (`router::sync`), on a local
//! directory and on a real S3 server (`s3s-fs`): what is saved comes back
//! identical into fresh directories, changes and deletions are followed, users
//! never see each other's files, and stored paths never escape their directory —
//! also while a hostile agent swaps directories for symlinks and files for FIFOs
//! under the router's feet (`renameat2(RENAME_EXCHANGE)` in a loop), as it can in
//! its own live workspace.

#[path = "common/hostile.rs"]
mod hostile;
#[path = "common/s3.rs"]
mod s3;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt, symlink},
    path::Path,
    time::{Duration, Instant},
};

use hostile::{Swapper, Watch, mkfifo, names, release_fifo};

use router::{
    storage::Storage,
    sync::{self, Limits},
    uploads::workspace::{Placed, place},
};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(120);

async fn user(db: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar("insert into users (email, password_hash) values ($1, 'x') returning id")
        .bind(email)
        .fetch_one(db)
        .await
        .expect("user inserted")
}

fn local_storage(dir: &Path) -> Storage {
    Storage::open(&format!("file:{}", dir.display())).expect("local storage")
}

/// Every regular file under `dir` (symlinks not followed), by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let entry = entry.expect("entry");
            let kind = entry.file_type().expect("type");
            if kind.is_dir() {
                visit(root, &entry.path(), out);
            } else if kind.is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, fs::read(entry.path()).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(dir, dir, &mut out);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, bytes).expect("write");
}

/// A workspace as an agent leaves it, plus what must not be synced.
fn fill_workspace(ws: &Path, outside: &Path) {
    write(&ws.join("report.md"), b"# Report\n\nAll good.\n");
    write(&ws.join("src/main.py"), b"print('hello')\n");
    write(&ws.join("src/deep/er/x.txt"), "héllo ✓".as_bytes());
    write(&ws.join("empty"), b"");
    write(
        &ws.join("image.png"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR rest of a png",
    );
    // Larger than one part of a multipart upload (object_store buffers 10 MiB).
    let big: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    write(&ws.join("data/big.bin"), &big);
    write(&ws.join("node_modules/pkg/index.js"), b"ignored");
    write(&ws.join("src/__pycache__/main.pyc"), b"ignored");
    write(&outside.join("secret"), b"host secret");
    symlink(outside.join("secret"), ws.join("leak")).expect("symlink");
    symlink(outside, ws.join("outside")).expect("symlink");
}

fn fill_state(state: &Path) {
    write(
        &state.join(".claude/projects/-workspace/0b5e7c2a.jsonl"),
        b"{\"type\":\"user\"}\n{\"type\":\"assistant\"}\n",
    );
    write(
        &state.join("jarvis/conversations/0b5e7c2a.json"),
        b"{\"seq\":42}",
    );
    write(&state.join("bin/tool.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(state.join("bin/tool.sh"), fs::Permissions::from_mode(0o755))
        .expect("chmod");
    write(&state.join(".cache/pip/x"), b"ignored");
}

fn expected_workspace(ws: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut t = tree(ws);
    t.retain(|p, _| !p.starts_with("node_modules/") && !p.contains("__pycache__"));
    t
}

async fn round_trip(storage: Storage, db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let dirs = tempfile::tempdir().expect("dir");
    let (ws, state, outside) = (
        dirs.path().join("ws"),
        dirs.path().join("state"),
        dirs.path().join("outside"),
    );
    fill_workspace(&ws, &outside);
    fill_state(&state);
    let expected = expected_workspace(&ws);
    assert_eq!(expected.len(), 6);
    assert!(!expected.contains_key("leak"));

    let report = tokio::time::timeout(WAIT, sync::save_workspace(&storage, &db, u, &ws))
        .await
        .expect("saved in time")
        .expect("saved");
    assert_eq!(
        (report.uploaded, report.unchanged, report.deleted),
        (6, 0, 0)
    );
    assert_eq!(report.skipped, 2, "two symlinks");
    let rows: BTreeMap<String, (i64, String, String)> = sqlx::query_as::<_, (String, i64, String, String)>(
        "select path, size, content_type, storage_key from files where owner_id = $1 and kind = 'workspace'",
    )
    .bind(u)
    .fetch_all(&db)
    .await
    .expect("rows")
    .into_iter()
    .map(|(p, s, c, k)| (p, (s, c, k)))
    .collect();
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        expected.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(rows["image.png"].1, "image/png");
    assert_eq!(rows["src/main.py"].1, "text/plain");
    assert_eq!(rows["report.md"].1, "text/markdown");
    assert_eq!(rows["data/big.bin"].0, 12 * 1024 * 1024);
    assert_eq!(
        rows["src/main.py"].2,
        format!("users/{u}/workspace/src/main.py")
    );

    let saved = tokio::time::timeout(WAIT, sync::save_state(&storage, u, &state))
        .await
        .expect("state saved in time")
        .expect("state saved");
    assert_eq!(saved.uploaded, 3);

    // A fresh sandbox gets both back.
    let (ws2, state2) = (dirs.path().join("ws2"), dirs.path().join("state2"));
    let restored = tokio::time::timeout(WAIT, sync::restore(&storage, &db, u, &ws2, &state2))
        .await
        .expect("restored in time")
        .expect("restored");
    assert_eq!(
        (restored.files, restored.skipped, restored.state_files),
        (6, 0, 3)
    );
    assert_eq!(tree(&ws2), expected);
    let mut expected_state = tree(&state);
    expected_state.retain(|p, _| !p.starts_with(".cache/"));
    assert_eq!(tree(&state2), expected_state);
    let mode = fs::metadata(state2.join("bin/tool.sh"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executables stay executable");
    assert!(!outside.join("leak").exists());

    // Nothing changed: nothing uploaded. Then a change, a deletion, a new file.
    let again = sync::save_workspace(&storage, &db, u, &ws)
        .await
        .expect("saved");
    assert_eq!((again.uploaded, again.unchanged, again.deleted), (0, 6, 0));
    write(&ws.join("report.md"), b"# Report\n\nRevised.\n");
    fs::remove_file(ws.join("src/main.py")).expect("rm");
    write(&ws.join("notes/new.txt"), b"new");
    let changed = sync::save_workspace(&storage, &db, u, &ws)
        .await
        .expect("saved");
    assert_eq!(
        (changed.uploaded, changed.unchanged, changed.deleted),
        (2, 4, 1)
    );
    assert_eq!(
        storage
            .head(&format!("users/{u}/workspace/src/main.py"))
            .await
            .expect("head"),
        None
    );
    let ws3 = dirs.path().join("ws3");
    sync::restore_workspace(&storage, &db, u, &ws3)
        .await
        .expect("restored");
    assert_eq!(tree(&ws3), expected_workspace(&ws));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn workspace_and_state_come_back_identical_from_local_storage(db: PgPool) {
    let dir = tempfile::tempdir().expect("dir");
    round_trip(local_storage(dir.path()), db).await;
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn workspace_and_state_come_back_identical_from_s3(db: PgPool) {
    let server = s3::S3Server::start().await;
    round_trip(server.storage(), db).await;
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_user_restores_only_their_own_files_and_state(db: PgPool) {
    let dir = tempfile::tempdir().expect("dir");
    let storage = local_storage(&dir.path().join("store"));
    let (a, b) = (
        user(&db, "a@example.com").await,
        user(&db, "b@example.com").await,
    );
    let ws = dir.path().join("ws");
    let state = dir.path().join("state");
    write(&ws.join("a.txt"), b"a's file");
    write(&state.join("jarvis/conversations/x.json"), b"{\"seq\":1}");
    sync::save_workspace(&storage, &db, a, &ws)
        .await
        .expect("saved");
    sync::save_state(&storage, a, &state).await.expect("saved");

    let (ws_b, state_b) = (dir.path().join("ws_b"), dir.path().join("state_b"));
    let report = sync::restore(&storage, &db, b, &ws_b, &state_b)
        .await
        .expect("restored");
    assert_eq!((report.files, report.state_files), (0, 0));
    assert!(tree(&ws_b).is_empty() && tree(&state_b).is_empty());

    // B's empty workspace saved does not touch A's rows.
    let empty = sync::save_workspace(&storage, &db, b, &ws_b)
        .await
        .expect("saved");
    assert_eq!(empty.deleted, 0);
    let count: i64 = sqlx::query_scalar("select count(*) from files where owner_id = $1")
        .bind(a)
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn hostile_stored_paths_are_never_written_outside_the_directory(db: PgPool) {
    let dir = tempfile::tempdir().expect("dir");
    let storage = local_storage(&dir.path().join("store"));
    let u = user(&db, "a@example.com").await;
    for (i, path) in [
        "../escape.txt",
        "/tmp/abs.txt",
        "a/../../up.txt",
        "nul\0.txt",
        "ok.txt",
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("users/{u}/workspace/k{i}");
        storage.put(&key, b"x".to_vec().into()).await.expect("put");
        sqlx::query(
            "insert into files (owner_id, kind, path, storage_key, size, content_type) values ($1, 'workspace', $2, $3, 1, 'text/plain')",
        )
        .bind(u)
        .bind(path.replace('\0', "\u{1}"))
        .bind(&key)
        .execute(&db)
        .await
        .expect("row");
    }
    // A state archive with an entry climbing out.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for name in ["../evil.txt", "fine.txt"] {
        let mut header = tar::Header::new_gnu();
        let raw = &mut header.as_gnu_mut().expect("gnu").name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append(&header, &b"x"[..]).expect("append");
    }
    let archive = tar.into_inner().expect("tar").finish().expect("gzip");
    storage
        .put(&sync::state_key(u), archive.into())
        .await
        .expect("put");

    let root = dir.path().join("deep/ws");
    let state = dir.path().join("deep/state");
    let report = sync::restore(&storage, &db, u, &root, &state)
        .await
        .expect("restored");
    assert_eq!(
        (report.files, report.skipped, report.state_files),
        (1, 4, 1)
    );
    assert_eq!(tree(&root).keys().collect::<Vec<_>>(), ["ok.txt"]);
    assert_eq!(tree(&state).keys().collect::<Vec<_>>(), ["fine.txt"]);
    for escaped in [
        "deep/escape.txt",
        "escape.txt",
        "up.txt",
        "deep/up.txt",
        "deep/evil.txt",
        "evil.txt",
    ] {
        assert!(!dir.path().join(escaped).exists(), "{escaped} written");
    }

    // A planted symlink in the target is replaced, never written through.
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    fs::remove_file(root.join("ok.txt")).expect("rm");
    symlink(outside.join("target.txt"), root.join("ok.txt")).expect("symlink");
    sync::restore_workspace(&storage, &db, u, &root)
        .await
        .expect("restored");
    assert!(!outside.join("target.txt").exists());
    assert_eq!(fs::read(root.join("ok.txt")).expect("read"), b"x");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn files_over_the_caps_are_skipped_and_reported(db: PgPool) {
    let dir = tempfile::tempdir().expect("dir");
    let storage = local_storage(&dir.path().join("store"));
    let u = user(&db, "a@example.com").await;
    let ws = dir.path().join("ws");
    write(&ws.join("small.txt"), b"small");
    write(&ws.join("large.bin"), &vec![7u8; 4096]);
    let limits = Limits {
        max_file_bytes: 1024,
        ..Limits::default()
    };
    let report = sync::save_workspace_with(&storage, &db, u, &ws, &limits)
        .await
        .expect("saved");
    assert_eq!(
        (report.uploaded, report.skipped, report.truncated),
        (1, 1, false)
    );

    let limits = Limits {
        max_files: 1,
        ..Limits::default()
    };
    write(&ws.join("z.txt"), b"z");
    let report = sync::save_workspace_with(&storage, &db, u, &ws, &limits)
        .await
        .expect("saved");
    assert!(report.truncated);
    // Stored files not seen past the cap but still present are kept.
    assert_eq!(report.deleted, 0);
}

/// How long a race runs at most, and how long one sync or copy may take in it.
const RACE: Duration = Duration::from_secs(25);
const ONE_STEP: Duration = Duration::from_secs(10);
/// The uid the copies are handed to (as the local backend hands them to
/// `jarvis-sandbox`).
const SANDBOX_UID: u32 = 65534;

/// `dir/ws/<swapped>` is a real directory, `dir/ws/<swapped>.link` a symlink to
/// `dir/victim` (empty, or holding `victim_files`), `dir/store` local storage.
fn race_dirs(
    swapped: &str,
    victim_files: &[(&str, &[u8])],
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let (ws, victim) = (dir.path().join("ws"), dir.path().join("victim"));
    fs::create_dir_all(ws.join(swapped)).expect("mkdir");
    fs::create_dir(&victim).expect("mkdir");
    for (name, bytes) in victim_files {
        fs::write(victim.join(name), bytes).expect("write");
    }
    symlink(&victim, ws.join(format!("{swapped}.link"))).expect("symlink");
    (dir, ws, victim)
}

/// What was done outside the workspace: the victim's entries (beyond those
/// expected) and the inotify events on it.
fn assert_untouched(dir: &Path, victim: &Path, expected: &[&str], watch: &Watch, what: &str) {
    let events = watch.events();
    let entries = names(victim);
    eprintln!(
        "{what}: {} entries in the victim directory beyond those expected, {} inotify events on it",
        entries.len() - expected.len().min(entries.len()),
        events.len()
    );
    assert_eq!(
        entries, expected,
        "{what}: files appeared outside the workspace"
    );
    assert!(
        events.is_empty(),
        "{what}: the directory outside was touched: {:?}",
        &events[..events.len().min(20)]
    );
    assert_eq!(
        names(dir),
        ["store", "victim", "ws"],
        "{what}: nothing else made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_copied_while_the_agent_swaps_uploads_for_a_symlink_never_land_outside() {
    let (dir, ws, victim) = race_dirs("uploads", &[]);
    let storage = local_storage(&dir.path().join("store"));
    storage
        .put(
            "users/u/uploads/1",
            b"#!/bin/sh\necho planted\n".to_vec().into(),
        )
        .await
        .expect("put");
    let watch = Watch::start(&victim);
    let swapper = Swapper::start(&ws, "uploads", "uploads.link");
    let (started, mut iterations, mut written, mut refused) = (Instant::now(), 0u64, 0u64, 0u64);
    // Until a few thousand copies ran and hundreds landed (most are refused
    // while `uploads` is the symlink), or the time is up.
    while (iterations < 3000 || written < 500) && started.elapsed() < RACE {
        let rel = format!("uploads/planted-{iterations}.sh");
        let copied = tokio::time::timeout(
            ONE_STEP,
            place(
                &storage,
                &ws,
                &rel,
                "users/u/uploads/1",
                Some((SANDBOX_UID, SANDBOX_UID)),
            ),
        )
        .await
        .expect("a copy never stalls");
        match copied {
            Ok(Placed::Written) => written += 1,
            Ok(Placed::Taken) => {}
            Err(_) => refused += 1,
        }
        iterations += 1;
    }
    let swaps = swapper.stop();
    eprintln!(
        "upload race: {iterations} copies in {:?}, {swaps} swaps, {written} written, {refused} refused",
        started.elapsed()
    );
    assert!(swaps > 1000, "the race ran ({swaps} swaps)");
    assert!(
        written > 0 && refused > 0,
        "both sides of the swap were hit"
    );
    assert_untouched(dir.path(), &victim, &[], &watch, "upload race");
    // What was written is in the real directory, whole, the sandbox's, under its name.
    let placed = names(&ws.join("uploads"));
    assert_eq!(placed.len() as u64, written, "{placed:?}");
    for name in placed {
        assert!(name.starts_with("planted-"), "{name}");
        let path = ws.join("uploads").join(&name);
        assert_eq!(fs::metadata(&path).expect("meta").uid(), SANDBOX_UID);
        assert_eq!(fs::read(&path).expect("read"), b"#!/bin/sh\necho planted\n");
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_restore_while_the_agent_swaps_a_directory_for_a_symlink_never_writes_outside(
    db: PgPool,
) {
    let (dir, ws, victim) = race_dirs("uploads", &[]);
    let storage = local_storage(&dir.path().join("store"));
    let u = user(&db, "a@example.com").await;
    const FILES: usize = 50;
    for i in 0..FILES {
        let key = format!("users/{u}/workspace/k{i}");
        storage
            .put(&key, b"restored".to_vec().into())
            .await
            .expect("put");
        sqlx::query(
            "insert into files (owner_id, kind, path, storage_key, size, content_type) values ($1, 'workspace', $2, $3, 8, 'text/plain')",
        )
        .bind(u)
        .bind(format!("uploads/r{i}.txt"))
        .bind(&key)
        .execute(&db)
        .await
        .expect("row");
    }
    let watch = Watch::start(&victim);
    let swapper = Swapper::start(&ws, "uploads", "uploads.link");
    let (started, mut rounds, mut files, mut skipped) = (Instant::now(), 0u64, 0u64, 0u64);
    while rounds < 60 && started.elapsed() < RACE {
        let report = tokio::time::timeout(ONE_STEP, sync::restore_workspace(&storage, &db, u, &ws))
            .await
            .expect("a restore never stalls");
        if let Ok(report) = report {
            files += report.files;
            skipped += report.skipped;
        }
        rounds += 1;
    }
    let swaps = swapper.stop();
    eprintln!(
        "restore race: {rounds} restores of {FILES} files ({} file writes) in {:?}, {swaps} swaps, {files} written, {skipped} skipped",
        rounds * FILES as u64,
        started.elapsed()
    );
    assert!(swaps > 1000, "the race ran ({swaps} swaps)");
    assert!(files > 0 && skipped > 0, "both sides of the swap were hit");
    assert_untouched(dir.path(), &victim, &[], &watch, "restore race");
    for name in names(&ws.join("uploads")) {
        assert!(name.starts_with('r'), "{name}");
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_fifo_or_a_symlink_swapped_in_during_a_sync_is_skipped_never_blocking_or_read(
    db: PgPool,
) {
    let secret: &[u8] = b"host secret";
    let (dir, ws, victim) = race_dirs("docs", &[("readme.md", secret)]);
    let storage = local_storage(&dir.path().join("store"));
    let u = user(&db, "a@example.com").await;
    write(&ws.join("ok.txt"), b"fine");
    write(&ws.join("docs/readme.md"), b"the agent's readme");
    write(&ws.join("data.txt"), b"data");
    mkfifo(&ws.join("data.fifo"));
    mkfifo(&ws.join("pipe"));
    symlink("/etc/passwd", ws.join("passwd")).expect("symlink");

    // Standing still: the FIFO and the link are skipped at once.
    let report = tokio::time::timeout(ONE_STEP, sync::save_workspace(&storage, &db, u, &ws))
        .await
        .unwrap_or_else(|_| {
            release_fifo(&ws.join("pipe"));
            panic!("the sync blocked on a FIFO")
        })
        .expect("saved");
    assert_eq!((report.uploaded, report.skipped), (3, 4), "{report:?}");

    // Swapped in while syncs run: a FIFO where a file was, a symlink out where a
    // directory was.
    let watch = Watch::start(&victim);
    let fifo_swap = Swapper::start(&ws, "data.txt", "data.fifo");
    let dir_swap = Swapper::start(&ws, "docs", "docs.link");
    let (started, mut rounds, mut skipped) = (Instant::now(), 0u64, 0u64);
    let mut stalled = false;
    while rounds < 300 && started.elapsed() < RACE {
        match tokio::time::timeout(ONE_STEP, sync::save_workspace(&storage, &db, u, &ws)).await {
            Ok(report) => skipped += report.expect("saved").skipped,
            Err(_) => {
                stalled = true;
                break;
            }
        }
        rounds += 1;
    }
    let swaps = (fifo_swap.stop(), dir_swap.stop());
    for fifo in ["data.txt", "data.fifo", "pipe"] {
        release_fifo(&ws.join(fifo));
    }
    eprintln!(
        "sync race: {rounds} syncs in {:?}, {swaps:?} swaps (FIFO, directory), {skipped} skipped, stalled: {stalled}",
        started.elapsed()
    );
    assert!(!stalled, "a sync blocked on a FIFO swapped in");
    assert!(
        swaps.0 > 1000 && swaps.1 > 1000,
        "the race ran ({swaps:?} swaps)"
    );
    assert_untouched(dir.path(), &victim, &["readme.md"], &watch, "sync race");
    // Neither the host's file nor /etc/passwd was stored under any name.
    let forbidden = [
        Sha256::digest(secret).to_vec(),
        Sha256::digest(fs::read("/etc/passwd").expect("passwd")).to_vec(),
    ];
    let rows: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("select path, sha256 from files where owner_id = $1")
            .bind(u)
            .fetch_all(&db)
            .await
            .expect("rows");
    for (path, sha) in rows {
        assert!(
            !["pipe", "passwd", "docs.link"].contains(&path.as_str()),
            "{path} stored"
        );
        assert!(
            !forbidden.contains(&sha.unwrap_or_default()),
            "{path}: outside bytes stored"
        );
    }
}
