use std::{
    collections::HashMap,
    fs,
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};

use super::*;

fn seen(size: u64, mtime_ns: i128) -> Seen {
    Seen { size, mtime_ns }
}

#[test]
fn changes_are_new_resized_or_touched_files_and_gone_ones() {
    let synced: Manifest = [
        ("a.txt".to_string(), seen(1, 10)),
        ("b.txt".to_string(), seen(2, 20)),
        ("c.txt".to_string(), seen(3, 30)),
        ("gone.txt".to_string(), seen(4, 40)),
    ]
    .into();
    let now: Manifest = [
        ("a.txt".to_string(), seen(1, 10)),
        ("b.txt".to_string(), seen(5, 20)),
        ("c.txt".to_string(), seen(3, 31)),
        ("new.txt".to_string(), seen(6, 60)),
    ]
    .into();
    assert_eq!(
        changes(&synced, &now),
        Changes {
            changed: vec!["b.txt".into(), "c.txt".into(), "new.txt".into()],
            removed: vec!["gone.txt".into()],
        }
    );
    assert_eq!(changes(&now, &now), Changes::default());
}

#[test]
fn a_scan_sees_regular_files_only_and_notices_edits() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path();
    fs::create_dir_all(root.join("src/node_modules/x")).expect("mkdir");
    fs::write(root.join("src/main.py"), b"print(1)").expect("write");
    fs::write(root.join("src/node_modules/x/i.js"), b"x").expect("write");
    fs::write(root.join(".jarvis-123"), b"temp").expect("write");
    fs::write(root.join("a.txt"), b"a").expect("write");
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).expect("symlink");
    std::os::unix::fs::symlink("/etc", root.join("etc")).expect("symlink");
    let before = scan(root).expect("scan");
    assert_eq!(
        before.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a.txt", "src/main.py"]
    );

    // Same size, another mtime: changed. Set explicitly, so no clock is raced.
    let file = fs::File::options()
        .write(true)
        .open(root.join("a.txt"))
        .expect("open");
    file.write_all_at_start(b"b");
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .expect("set mtime");
    fs::remove_file(root.join("src/main.py")).expect("remove");
    let after = scan(root).expect("scan");
    assert_eq!(
        changes(&before, &after),
        Changes {
            changed: vec!["a.txt".into()],
            removed: vec!["src/main.py".into()],
        }
    );
    assert!(scan(&root.join("missing")).expect("scan").is_empty());
}

trait WriteAtStart {
    fn write_all_at_start(&self, bytes: &[u8]);
}

impl WriteAtStart for fs::File {
    fn write_all_at_start(&self, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        self.write_all_at(bytes, 0).expect("write");
    }
}

#[test]
fn unsafe_or_ignored_paths_are_not_synced() {
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a//b",
        "./a",
        "a\0b",
        "a\nb",
        "a\\b",
        "node_modules/x",
        "src/.venv/bin/python",
        ".jarvis-x",
    ] {
        assert!(!syncable(bad), "{bad:?} accepted");
    }
    for good in ["a", "src/main.py", ".hidden/x", "a..b/c", "résumé.txt"] {
        assert!(syncable(good), "{good:?} refused");
    }
}

#[test]
fn the_state_archive_unpacks_what_was_packed_and_nothing_outside() {
    let dirs = tempfile::tempdir().expect("dir");
    let (from, to) = (dirs.path().join("from"), dirs.path().join("to"));
    fs::create_dir_all(from.join(".claude/projects/-workspace")).expect("mkdir");
    fs::write(from.join(".claude/projects/-workspace/c.jsonl"), b"{}\n").expect("write");
    fs::write(from.join("tool.sh"), b"#!/bin/sh\n").expect("write");
    fs::set_permissions(from.join("tool.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let archive = dirs.path().join("a.tar.gz");
    drop(pack(&from, &archive).expect("pack"));
    fs::create_dir_all(&to).expect("mkdir");
    assert_eq!(unpack(&archive, &to, None).expect("unpack"), 2);
    assert_eq!(
        fs::read(to.join(".claude/projects/-workspace/c.jsonl")).expect("read"),
        b"{}\n"
    );
    let mode = fs::metadata(to.join("tool.sh"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o100, 0o100, "executable stays executable");

    // An entry that would escape is skipped; the rest is written.
    let evil = dirs.path().join("evil.tar.gz");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        fs::File::create(&evil).expect("create"),
        flate2::Compression::fast(),
    ));
    for (name, bytes) in [("../escaped", b"x"), ("fine", b"y")] {
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        tar.append(&header, &bytes[..]).expect("append");
    }
    tar.into_inner().expect("tar").finish().expect("gzip");
    let target = dirs.path().join("target");
    fs::create_dir_all(&target).expect("mkdir");
    assert_eq!(unpack(&evil, &target, None).expect("unpack"), 1);
    assert!(!dirs.path().join("escaped").exists());
    assert_eq!(fs::read(target.join("fine")).expect("read"), b"y");
}

/// The router's side of these routes, in memory: files by path, one state
/// archive, and the token it takes.
#[derive(Clone, Default)]
struct FakeRouter {
    files: Arc<StdMutex<HashMap<String, Vec<u8>>>>,
    state: Arc<StdMutex<Option<Vec<u8>>>>,
    requests: Arc<StdMutex<Vec<String>>>,
}

const TOKEN: &str = "ws-token";

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(TOKEN)
}

async fn serve_fake(fake: FakeRouter) -> String {
    async fn list(State(f): State<FakeRouter>, h: HeaderMap) -> Result<String, StatusCode> {
        if !authorized(&h) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        let files = f.files.lock().expect("lock");
        let list: Vec<_> = files
            .iter()
            .map(|(p, b)| serde_json::json!({"path": p, "size": b.len(), "kind": "workspace"}))
            .collect();
        Ok(serde_json::json!({ "files": list }).to_string())
    }
    async fn file(
        State(f): State<FakeRouter>,
        h: HeaderMap,
        method: axum::http::Method,
        UrlPath(path): UrlPath<String>,
        body: Bytes,
    ) -> Result<Vec<u8>, StatusCode> {
        if !authorized(&h) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        f.requests
            .lock()
            .expect("lock")
            .push(format!("{method} {path}"));
        let mut files = f.files.lock().expect("lock");
        match method.as_str() {
            "GET" => files.get(&path).cloned().ok_or(StatusCode::NOT_FOUND),
            "PUT" => {
                files.insert(path, body.to_vec());
                Ok(Vec::new())
            }
            _ => files
                .remove(&path)
                .map(|_| Vec::new())
                .ok_or(StatusCode::NOT_FOUND),
        }
    }
    async fn state(
        State(f): State<FakeRouter>,
        h: HeaderMap,
        method: axum::http::Method,
        body: Bytes,
    ) -> Result<Vec<u8>, StatusCode> {
        if !authorized(&h) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        let mut state = f.state.lock().expect("lock");
        if method == axum::http::Method::PUT {
            *state = Some(body.to_vec());
            return Ok(Vec::new());
        }
        state.clone().ok_or(StatusCode::NOT_FOUND)
    }
    let app = Router::new()
        .route("/v1/workspace/files", get(list))
        .route(
            "/v1/workspace/files/{*path}",
            get(file).put(file).delete(file),
        )
        .route("/v1/workspace/state", get(state).put(state))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_fresh_sandbox_restores_pushes_only_changes_and_fetches_new_uploads() {
    let fake = FakeRouter::default();
    fake.files
        .lock()
        .expect("lock")
        .insert("notes/a b.txt".into(), b"stored".to_vec());
    fake.files
        .lock()
        .expect("lock")
        .insert("../evil".into(), b"x".to_vec());
    let url = serve_fake(fake.clone()).await;
    let dirs = tempfile::tempdir().expect("dir");
    let (ws, state) = (dirs.path().join("ws"), dirs.path().join("state"));
    // The sandbox makes both directories before it restores.
    fs::create_dir_all(&ws).expect("mkdir");
    fs::create_dir_all(&state).expect("mkdir");
    let sync = RouterSync::new(&url, TOKEN, &ws, &state, None).expect("sync");

    let restored = sync.restore().await.expect("restore");
    assert_eq!((restored.files, restored.skipped), (1, 1));
    assert_eq!(fs::read(ws.join("notes/a b.txt")).expect("read"), b"stored");
    fake.requests.lock().expect("lock").clear();

    // Nothing changed: nothing but the state goes up.
    let pushed = sync.push().await.expect("push");
    assert_eq!(pushed, Pushed::default());
    assert!(fake.requests.lock().expect("lock").is_empty());
    assert!(fake.state.lock().expect("lock").is_some());

    // The agent writes one file and removes another.
    fs::write(ws.join("out.md"), b"# Result").expect("write");
    fs::remove_file(ws.join("notes/a b.txt")).expect("remove");
    fs::create_dir_all(state.join("jarvis")).expect("mkdir");
    fs::write(state.join("jarvis/c.json"), b"{\"seq\":2}").expect("write");
    let pushed = sync.push().await.expect("push");
    assert_eq!((pushed.uploaded, pushed.deleted, pushed.failed), (1, 1, 0));
    let files = fake.files.lock().expect("lock").clone();
    assert_eq!(
        files.get("out.md").map(Vec::as_slice),
        Some(&b"# Result"[..])
    );
    assert!(!files.contains_key("notes/a b.txt"));

    // An upload made while awake comes on demand, once.
    fake.files
        .lock()
        .expect("lock")
        .insert("uploads/data.csv".into(), b"a,b".to_vec());
    assert!(sync.fetch("uploads/data.csv").await.expect("fetch"));
    assert!(!sync.fetch("uploads/data.csv").await.expect("fetch"));
    assert!(!sync.fetch("../../etc/passwd").await.expect("fetch"));
    assert_eq!(fs::read(ws.join("uploads/data.csv")).expect("read"), b"a,b");
    fake.requests.lock().expect("lock").clear();
    assert_eq!(sync.push().await.expect("push"), Pushed::default());

    // A new sandbox with empty directories gets files and state back.
    let (ws2, state2) = (dirs.path().join("ws2"), dirs.path().join("state2"));
    let again = RouterSync::new(&url, TOKEN, &ws2, &state2, None).expect("sync");
    let restored = again.restore().await.expect("restore");
    assert_eq!(restored.state_files, 1);
    assert_eq!(
        fs::read(state2.join("jarvis/c.json")).expect("read"),
        b"{\"seq\":2}"
    );
    assert_eq!(fs::read(ws2.join("out.md")).expect("read"), b"# Result");

    // A wrong token is an error, not an empty workspace.
    let (ws3, state3) = (dirs.path().join("ws3"), dirs.path().join("state3"));
    let wrong = RouterSync::new(&url, "nope", &ws3, &state3, None).expect("sync");
    assert!(wrong.restore().await.is_err());
}

#[test]
fn a_fresh_volumes_lost_and_found_does_not_count_as_content() {
    let dir = tempfile::tempdir().expect("dir");
    assert!(is_empty(dir.path()));
    assert!(is_empty(&dir.path().join("missing")));
    fs::create_dir(dir.path().join("lost+found")).expect("mkdir");
    assert!(is_empty(dir.path()), "a new persistent volume is empty");
    fs::write(dir.path().join("a.txt"), b"a").expect("write");
    assert!(!is_empty(dir.path()));
}

#[test]
fn past_the_file_cap_the_same_files_are_seen_and_unseen_ones_are_not_gone() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path();
    fs::create_dir_all(root.join("b")).expect("mkdir");
    for name in ["c.txt", "a.txt", "b/z.txt", "b/y.txt"] {
        fs::write(root.join(name), b"x").expect("write");
    }
    let (seen, truncated) = scan_capped(root, 3).expect("scan");
    assert!(truncated);
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a.txt", "b/y.txt", "c.txt"],
        "a directory's files before its subdirectories, in name order, whatever order it lists"
    );
    let (all, truncated) = scan_capped(root, 10).expect("scan");
    assert!(!truncated);
    assert_eq!(all.len(), 4);
}

#[tokio::test]
async fn a_push_past_the_cap_deletes_only_what_is_gone() {
    let fake = FakeRouter::default();
    let url = serve_fake(fake.clone()).await;
    let dirs = tempfile::tempdir().expect("dir");
    let (ws, state) = (dirs.path().join("ws"), dirs.path().join("state"));
    fs::create_dir_all(&ws).expect("mkdir");
    fs::create_dir_all(&state).expect("mkdir");
    let sync = RouterSync::new(&url, TOKEN, &ws, &state, None).expect("sync");
    sync.restore().await.expect("restore");
    // Synced earlier: a file now past the cap, and one that is really gone.
    let kept = ws.join("zz-kept.txt");
    fs::write(&kept, b"k").expect("write");
    let meta = fs::metadata(&kept).expect("meta");
    {
        let mut synced = sync.synced.lock().await;
        synced.insert("zz-kept.txt".into(), Seen::of(&meta));
        synced.insert("zz-gone.txt".into(), seen(1, 1));
    }
    for i in 0..MAX_FILES {
        fs::write(ws.join(format!("f{i:05}")), b"").expect("write");
    }
    fake.requests.lock().expect("lock").clear();
    let pushed = sync.push().await.expect("push");
    assert_eq!(pushed.deleted, 1);
    let requests = fake.requests.lock().expect("lock").clone();
    assert!(requests.contains(&"DELETE zz-gone.txt".to_string()));
    assert!(
        !requests.iter().any(|r| r.contains("zz-kept.txt")),
        "{requests:?}"
    );
}
