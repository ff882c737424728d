//! A store that refuses writes (issue 18): the real `s3s-fs` behind a gate that
//! answers chosen PUTs with S3's own error XML ([`s3_gate`]). A refused object is
//! an error, never a panic: a sync stores the other files and reports it, an
//! upload refused for its size answers 413, a missing bucket fails `/readyz`
//! naming it, and objects carry a Content-Type. Also: a NUL in an upload's file
//! name answers 422.

mod common;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/s3_gate.rs"]
mod s3_gate;

use std::{collections::BTreeSet, fs, path::Path};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use common::TestApp;
use router::{
    metrics::Metrics,
    storage::{Refusal, Storage},
    sync,
};
use s3_gate::{Answer, Rule, S3Gate};
use sqlx::PgPool;
use uuid::Uuid;

async fn user(db: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar("insert into users (email, password_hash) values ($1, 'x') returning id")
        .bind(email)
        .fetch_one(db)
        .await
        .expect("user inserted")
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, bytes).expect("write");
}

/// The workspace paths with a `files` row of `user`.
async fn rows(db: &PgPool, user: Uuid) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("select path from files where owner_id = $1")
        .bind(user)
        .fetch_all(db)
        .await
        .expect("rows")
        .into_iter()
        .collect()
}

/// The value of `jarvis_storage_write_failures_total{kind}` in `metrics`.
fn write_failures(metrics: &str, kind: &str) -> u64 {
    let prefix = format!("jarvis_storage_write_failures_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_sync_stores_what_the_store_takes_and_reports_what_it_refuses(db: PgPool) {
    let gate = S3Gate::start(vec![
        Rule::KeyContains("refused".into(), Answer::InvalidKey),
        // The first 5 MiB part of a multipart upload is refused.
        Rule::LargerThan(3 * 1024 * 1024, Answer::TooLarge(413)),
    ])
    .await;
    let storage = gate.storage();
    let alice = user(&db, "alice@example.com").await;
    let dir = tempfile::tempdir().expect("dir");
    let ws = dir.path().join("ws");
    write(&ws.join("notes.txt"), b"kept\n");
    write(&ws.join("docs/report.md"), b"# Report\n");
    write(&ws.join("refused-name.txt"), b"the store says no\n");
    write(&ws.join("big.bin"), &vec![7u8; 6 * 1024 * 1024]);

    let report = sync::save_workspace(&storage, &db, alice, &ws)
        .await
        .expect("the sync ends with a report, not a panic or an error");
    assert_eq!((report.uploaded, report.refused), (2, 2), "{report:?}");
    assert_eq!(
        rows(&db, alice).await,
        BTreeSet::from(["notes.txt".to_string(), "docs/report.md".to_string()])
    );
    // Counted on /metrics, by kind.
    let metrics = Metrics::default().render();
    assert!(write_failures(&metrics, "bad_key") >= 1, "{metrics}");
    assert!(write_failures(&metrics, "too_large") >= 1, "{metrics}");
    // Objects carry a Content-Type.
    let types: Vec<_> = gate
        .writes()
        .into_iter()
        .filter(|w| !w.refused)
        .map(|w| (w.path, w.content_type))
        .collect();
    assert!(
        types
            .iter()
            .any(|(p, t)| p.ends_with("/notes.txt") && t.as_deref() == Some("text/plain")),
        "{types:?}"
    );
    assert!(
        types
            .iter()
            .any(|(p, t)| p.ends_with("/report.md") && t.as_deref() == Some("text/markdown")),
        "{types:?}"
    );

    // Nothing refused was half-stored: a fresh restore has exactly the stored files.
    let (ws2, state2) = (dir.path().join("ws2"), dir.path().join("state2"));
    let restored = sync::restore(&storage, &db, alice, &ws2, &state2)
        .await
        .expect("restored");
    assert_eq!(restored.files, 2);
    assert_eq!(
        fs::read(ws2.join("notes.txt")).expect("notes"),
        b"kept\n".to_vec()
    );
    // The next sync tries the refused files again and keeps the stored ones.
    let again = sync::save_workspace(&storage, &db, alice, &ws)
        .await
        .expect("report");
    assert_eq!((again.unchanged, again.refused, again.deleted), (2, 2, 0));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_single_refused_put_is_an_error_naming_the_refusal(db: PgPool) {
    drop(db);
    let gate = S3Gate::start(vec![Rule::KeyContains(
        "nobucket".into(),
        Answer::NoSuchBucket,
    )])
    .await;
    let storage = gate.storage();
    let error = storage
        .put_reader("users/x/nobucket", &b"bytes"[..], None)
        .await
        .expect_err("refused");
    assert_eq!(error.refusal(), Some(Refusal::NoBucket), "{error:?}");
    let error = storage
        .put("users/x/nobucket2", bytes::Bytes::from_static(b"bytes"))
        .await
        .expect_err("refused");
    assert_eq!(error.refusal(), Some(Refusal::NoBucket), "{error:?}");
    storage
        .put_reader("users/x/fine", &b"bytes"[..], None)
        .await
        .expect("stored");
}

/// `app` with `storage` in place of its own.
fn with_storage(mut app: TestApp, storage: Storage) -> TestApp {
    app.state.storage = storage;
    app.router = router::http::app(app.state.clone());
    app
}

fn upload_request(token: &str, name: &[u8], content: &[u8]) -> Request<Body> {
    common::upload_request(token, name, "application/octet-stream", content)
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_upload_the_store_refuses_for_its_size_answers_413(db: PgPool) {
    // AWS answers EntityTooLarge with 400: the code, not the status, tells.
    let gate = S3Gate::start(vec![Rule::LargerThan(1000, Answer::TooLarge(400))]).await;
    let app = with_storage(TestApp::new(db).await, gate.storage());
    let alice = app.register("alice@example.com").await;
    let big = app
        .call(upload_request(&alice.access, b"big.txt", &[b'x'; 4000]))
        .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", big.body);
    assert_eq!(big.code(), "payload_too_large");
    let small = app
        .call(upload_request(&alice.access, b"small.txt", b"hello"))
        .await;
    assert_eq!(small.status, StatusCode::CREATED, "{:?}", small.body);
    // The upload went with the Content-Type of its name, not its key.
    let sent = gate.writes();
    assert!(
        sent.iter()
            .any(|w| !w.refused && w.content_type.as_deref() == Some("text/plain")),
        "{sent:?}"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn readyz_fails_naming_a_missing_bucket(db: PgPool) {
    let server = s3::S3Server::start().await;
    let app = TestApp::new(db).await;
    let missing = router::storage::S3Config {
        bucket: "no-such-bucket-7".into(),
        ..server.config.clone()
    };
    let app = with_storage(app, Storage::s3(&missing).expect("opens"));
    let reply = app
        .call(
            Request::get("/readyz")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let message = reply.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("no-such-bucket-7"), "{:?}", reply.body);

    let app = with_storage(app, server.storage());
    let reply = app
        .call(
            Request::get("/readyz")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_nul_in_an_upload_name_answers_422(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let reply = app
        .call(upload_request(&alice.access, b"bad\0name.txt", b"hello"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("control characters")),
        "{:?}",
        reply.body
    );
}

/// File names Supabase Storage refuses as keys (or object_store would
/// percent-encode), names spelled like the escapes that make them keys, and a
/// path too long to spell out.
fn awkward_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "résumé.txt",
        "notes#1.md",
        "draft~",
        "fifty%.txt",
        "[draft] {v2}.md",
        "日本語/メモ.md",
        "why?.txt",
        "star*.txt",
        "a!21.txt",
        "back`tick^|\"<>.txt",
        "plain (copy), 2.txt",
    ]
    .map(String::from)
    .to_vec();
    names.push(format!("{}/{}", "é".repeat(100), "ü".repeat(100)));
    names
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn every_file_name_is_stored_under_a_key_supabase_takes_and_comes_back_identical(db: PgPool) {
    let gate = S3Gate::start(vec![Rule::SupabaseKeys]).await;
    let storage = gate.storage();
    let alice = user(&db, "alice@example.com").await;
    let dir = tempfile::tempdir().expect("dir");
    let ws = dir.path().join("ws");
    let names = awkward_names();
    for name in &names {
        write(&ws.join(name), name.as_bytes());
    }

    let report = sync::save_workspace(&storage, &db, alice, &ws)
        .await
        .expect("report");
    assert_eq!(
        (report.uploaded, report.refused, report.skipped),
        (names.len() as u64, 0, 0),
        "{report:?}"
    );
    // The row keeps the real path.
    assert_eq!(rows(&db, alice).await, names.iter().cloned().collect());
    let writes = gate.writes();
    assert!(
        writes
            .iter()
            .all(|w| !w.refused && s3_gate::supabase_accepts(&w.path)),
        "{writes:?}"
    );
    // Content types come from the real name, not its spelling in the key.
    assert!(
        writes
            .iter()
            .any(|w| w.decoded_path().ends_with("/r!C3!A9sum!C3!A9.txt")
                && w.content_type.as_deref() == Some("text/plain")),
        "{writes:?}"
    );

    // A fresh directory gets every file back, byte for byte, under its name.
    let (ws2, state2) = (dir.path().join("ws2"), dir.path().join("state2"));
    let restored = sync::restore(&storage, &db, alice, &ws2, &state2)
        .await
        .expect("restored");
    assert_eq!(restored.files, names.len() as u64, "{restored:?}");
    for name in &names {
        assert_eq!(
            fs::read(ws2.join(name)).expect("restored file"),
            name.as_bytes(),
            "{name}"
        );
    }

    // One file at a time, as a pod pushes it: the same keys, the same rows.
    let pushed = "pods/naïve #3 [final]~.txt";
    let saved = sync::save_workspace_file(
        &storage,
        &db,
        alice,
        pushed,
        &b"from a pod"[..],
        &sync::Limits::default(),
    )
    .await
    .expect("stored");
    assert_eq!(saved, sync::FileSaved::Stored(10));
    let stored = sync::stored_files(&db, alice).await.expect("stored files");
    let file = stored
        .iter()
        .find(|f| f.path == pushed)
        .expect("a row at the pushed path");
    assert!(
        !file.storage_key.contains(['ï', '#', '[', '~']),
        "{}",
        file.storage_key
    );
    assert!(gate.writes().iter().all(|w| !w.refused));
    // Gone from the workspace: row and object go.
    fs::remove_file(ws.join("why?.txt")).expect("rm");
    let again = sync::save_workspace(&storage, &db, alice, &ws)
        .await
        .expect("report");
    assert_eq!((again.deleted, again.refused), (2, 0), "{again:?}");
    let left = storage
        .list(&format!("users/{alice}/workspace"))
        .await
        .expect("list");
    assert_eq!(left.len(), names.len() - 1, "{left:?}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_file_an_older_router_stored_under_its_raw_path_moves_to_a_portable_key(db: PgPool) {
    // A store without Supabase's rule, as the older router's was.
    let gate = S3Gate::start(vec![]).await;
    let storage = gate.storage();
    let alice = user(&db, "alice@example.com").await;
    let old_key = format!("users/{alice}/workspace/fifty%.txt");
    storage
        .put(&old_key, bytes::Bytes::from_static(b"old\n"))
        .await
        .expect("stored as the older router did");
    sqlx::query(
        "insert into files (owner_id, kind, path, storage_key, size, content_type, sha256)
         values ($1, 'workspace', 'fifty%.txt', $2, 4, 'text/plain', sha256('old\n'::bytea))",
    )
    .bind(alice)
    .bind(&old_key)
    .execute(&db)
    .await
    .expect("row");

    // It still comes back from where it is.
    let dir = tempfile::tempdir().expect("dir");
    let (ws, state) = (dir.path().join("ws"), dir.path().join("state"));
    sync::restore(&storage, &db, alice, &ws, &state)
        .await
        .expect("restored");
    assert_eq!(fs::read(ws.join("fifty%.txt")).expect("file"), b"old\n");
    // Unchanged, it stays where it is.
    let same = sync::save_workspace(&storage, &db, alice, &ws)
        .await
        .expect("report");
    assert_eq!(same.unchanged, 1, "{same:?}");

    // Changed, it moves to its portable key and the old object goes.
    fs::write(ws.join("fifty%.txt"), b"new\n").expect("write");
    let moved = sync::save_workspace(&storage, &db, alice, &ws)
        .await
        .expect("report");
    assert_eq!(moved.uploaded, 1, "{moved:?}");
    let key: String = sqlx::query_scalar("select storage_key from files where owner_id = $1")
        .bind(alice)
        .fetch_one(&db)
        .await
        .expect("row");
    assert_eq!(key, sync::workspace_key(alice, "fifty%.txt"));
    assert_eq!(key, format!("users/{alice}/workspace/fifty!25.txt"));
    assert_eq!(storage.head(&old_key).await.expect("head"), None);
    let objects = storage
        .list(&format!("users/{alice}/workspace"))
        .await
        .expect("list");
    assert_eq!(objects.len(), 1, "{objects:?}");
}

#[tokio::test]
async fn a_multipart_upload_with_a_refused_part_is_aborted_and_stores_nothing() {
    const MIB: usize = 1024 * 1024;
    // Part 2 is the last of a 6 MiB object and a middle one of an 11 MiB one.
    let gate = S3Gate::start(vec![Rule::Part(2, Answer::TooLarge(413))]).await;
    let storage = gate.storage();
    for (key, size) in [
        ("users/x/last.bin", 6 * MIB),
        ("users/x/middle.bin", 11 * MIB),
    ] {
        let body = vec![1u8; size];
        let error = storage
            .put_reader(key, &body[..], None)
            .await
            .expect_err("refused");
        assert_eq!(error.refusal(), Some(Refusal::TooLarge), "{error:?}");
        assert!(
            gate.aborted().iter().any(|p| p.ends_with(key)),
            "{key}: {:?}",
            gate.aborted()
        );
        assert_eq!(storage.head(key).await.expect("head"), None, "{key}");
    }

    // Without the refusal, the same stream is stored whole, part by part.
    let gate = S3Gate::start(vec![]).await;
    let storage = gate.storage();
    let body: Vec<u8> = (0..11 * MIB + 3).map(|i| (i % 251) as u8).collect();
    let info = storage
        .put_reader("users/x/whole.bin", &body[..], None)
        .await
        .expect("stored");
    assert_eq!(info.size, body.len() as u64);
    let mut back = Vec::new();
    storage
        .copy_to("users/x/whole.bin", &mut back)
        .await
        .expect("read back");
    assert!(back == body, "{} bytes back of {}", back.len(), body.len());
    assert!(gate.aborted().is_empty());
}
