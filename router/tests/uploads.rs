//! `POST /api/files` through the router in-process (no sandbox): what is
//! stored, under whom, with which name and type, and that every refused or
//! cut-off upload stores nothing. The agent's side is `uploads_agent.rs`.

mod common;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use bytes::Bytes;
use common::{Reply, TestApp, User};
use serde_json::Value;
use sqlx::PgPool;

const BOUNDARY: &str = "jarvis-test-boundary-7MA4YWxkTrZu0gW";

/// A multipart body with one `file` field per `(raw filename, content)`. Names
/// are raw header bytes, so tests can send what no browser would.
fn multipart(files: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content) in files {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"");
        body.extend_from_slice(name);
        // The client's type is a lie the router must not believe.
        body.extend_from_slice(b"\"\r\nContent-Type: text/plain\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

async fn upload(app: &TestApp, user: &User, files: &[(&[u8], &[u8])]) -> Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/files")
        .header(header::AUTHORIZATION, format!("Bearer {}", user.access))
        .header(header::CONTENT_TYPE, content_type())
        .body(Body::from(multipart(files)))
        .expect("request");
    app.call(req).await
}

/// Objects under the user's uploads prefix (staging files of unfinished
/// multipart uploads included).
fn stored_objects(app: &TestApp, user: &User) -> Vec<String> {
    let dir = app
        .storage_dir
        .path()
        .join(format!("users/{}/uploads", user.id));
    match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn upload_rows(app: &TestApp, user: &User) -> i64 {
    sqlx::query_scalar("select count(*) from files where owner_id = $1 and kind = 'upload'")
        .bind(user.id)
        .fetch_one(&app.db)
        .await
        .expect("count")
}

async fn assert_nothing_stored(app: &TestApp, user: &User) {
    assert_eq!(upload_rows(app, user).await, 0, "a row was left");
    assert_eq!(
        stored_objects(app, user),
        Vec::<String>::new(),
        "an object was left"
    );
}

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn uploads_are_stored_under_their_owner_with_the_type_sniffed_from_the_bytes(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let csv = b"region,sales\nnorth,10\nsouth,20\n";
    let reply = upload(
        &app,
        &alice,
        &[(b"figures.csv", csv), (b"photo-not-text.txt", PNG)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let files = reply.body["files"].as_array().expect("files").clone();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["filename"], "figures.csv");
    assert_eq!(files[0]["kind"], "upload");
    assert_eq!(files[0]["size"], csv.len());
    assert_eq!(files[0]["content_type"], "text/csv");
    // The client said text/plain and the name says .txt; the bytes are a PNG.
    assert_eq!(files[1]["content_type"], "image/png");
    assert_eq!(files[1]["path"], "uploads/photo-not-text.txt");

    let id = files[0]["id"].as_str().expect("id");
    let download = app
        .get(&format!("/api/files/{id}/download"), &alice.access)
        .await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.bytes, csv);
    assert_eq!(download.headers[header::CONTENT_TYPE], "text/csv");

    let listed = app.get("/api/files", &alice.access).await;
    let kinds: Vec<&str> = listed.body["files"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["upload", "upload"]);
    assert_eq!(stored_objects(&app, &alice).len(), 2);
    let key: String = sqlx::query_scalar("select storage_key from files where id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .expect("row");
    assert!(
        key.starts_with(&format!("users/{}/uploads/", alice.id)),
        "{key}"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn another_users_file_answers_404_on_get_download_and_delete(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let reply = upload(&app, &alice, &[(b"secret.txt", b"alice only")]).await;
    let id = reply.body["files"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    for uri in [
        format!("/api/files/{id}"),
        format!("/api/files/{id}/download"),
    ] {
        let r = app.get(&uri, &bob.access).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(!String::from_utf8_lossy(&r.bytes).contains("alice only"));
    }
    let r = app
        .send(
            Method::DELETE,
            &format!("/api/files/{id}"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let bobs = app.get("/api/files", &bob.access).await;
    assert_eq!(bobs.body["files"], Value::Array(vec![]));
    // Still Alice's, whole.
    let r = app
        .get(&format!("/api/files/{id}/download"), &alice.access)
        .await;
    assert_eq!(r.bytes, b"alice only");

    // And her own delete removes object and row.
    let r = app
        .send(
            Method::DELETE,
            &format!("/api/files/{id}"),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_nothing_stored(&app, &alice).await;
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_file_over_the_limit_gets_413_and_its_batch_stores_nothing(db: PgPool) {
    let app = TestApp::with_config(db, |c| c.max_upload_bytes = 64 * 1024).await;
    let alice = app.register("alice@example.com").await;
    let big = vec![b'x'; 64 * 1024 + 1];
    let reply = upload(&app, &alice, &[(b"fine.txt", b"small"), (b"big.txt", &big)]).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.code(), "payload_too_large");
    let message = reply.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("65536") && message.contains("big.txt"),
        "{message}"
    );
    assert_nothing_stored(&app, &alice).await;
    // Exactly at the limit is fine.
    let exact = vec![b'x'; 64 * 1024];
    let reply = upload(&app, &alice, &[(b"exact.txt", &exact)]).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_plans_storage_quota_refuses_what_does_not_fit(db: PgPool) {
    let app = TestApp::with_config(db, |c| {
        c.plans = Some(r#"{"free": {"storage_bytes": 3000}}"#.into());
    })
    .await;
    let alice = app.register("alice@example.com").await;
    let first = upload(&app, &alice, &[(b"a.bin", &[1u8; 2000])]).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let second = upload(&app, &alice, &[(b"b.bin", &[2u8; 1500])]).await;
    assert_eq!(
        second.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        second.body
    );
    assert_eq!(second.code(), "quota_exceeded");
    assert_eq!(upload_rows(&app, &alice).await, 1);
    assert_eq!(stored_objects(&app, &alice).len(), 1);
    // What still fits is taken.
    let third = upload(&app, &alice, &[(b"c.bin", &[3u8; 1000])]).await;
    assert_eq!(third.status, StatusCode::CREATED, "{:?}", third.body);
    let usage = app.get("/api/usage", &alice.access).await;
    assert_eq!(usage.body["limits"]["storage_bytes"], 3000);
    // What the Account page's storage bar shows: the bytes stored, against the quota.
    assert_eq!(usage.body["storage_used"], 3000);
    assert_eq!(usage.body["storage_quota"], 3000);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn two_uploads_at_once_cannot_both_squeeze_under_the_quota(db: PgPool) {
    use tower::ServiceExt;
    let app = TestApp::with_config(db, |c| {
        c.plans = Some(r#"{"free": {"storage_bytes": 3000}}"#.into());
    })
    .await;
    let alice = app.register("alice@example.com").await;
    // Each fits alone; together they do not. Both bodies are sent but for their
    // closing `--`, so both files are stored before either request can commit.
    let mut tails = Vec::new();
    let mut calls = Vec::new();
    for (name, byte) in [("a.bin", 1u8), ("b.bin", 2u8)] {
        let body = multipart(&[(name.as_bytes(), &[byte; 2000])]);
        let (held, tail) = body.split_at(body.len() - 4);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        tx.send(Ok(Bytes::copy_from_slice(held)))
            .await
            .expect("queued");
        tails.push((tx, Bytes::copy_from_slice(tail)));
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/files")
            .header(header::AUTHORIZATION, format!("Bearer {}", alice.access))
            .header(header::CONTENT_TYPE, content_type())
            .body(Body::from_stream(stream))
            .expect("request");
        let router = app.router.clone();
        calls.push(tokio::spawn(async move {
            router.oneshot(req).await.expect("infallible").status()
        }));
    }
    // Give both requests time to stream their file (an ordering aid, not an assertion).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for (tx, tail) in tails {
        tx.send(Ok(tail)).await.expect("sent");
    }
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.expect("joined"));
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::PAYLOAD_TOO_LARGE]
    );
    assert_eq!(upload_rows(&app, &alice).await, 1);
    assert_eq!(stored_objects(&app, &alice).len(), 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn hostile_names_store_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let names: [&[u8]; 8] = [
        b"../../etc/passwd",
        b"a/b",
        b"..",
        b"a\\b",
        b"a\0b",
        b"a\nb",
        b"a\rb",
        b"",
    ];
    for name in names {
        let reply = upload(&app, &alice, &[(name, b"pwned")]).await;
        assert!(
            reply.status.is_client_error(),
            "{:?} answered {} {:?}",
            String::from_utf8_lossy(name),
            reply.status,
            reply.body
        );
        assert_nothing_stored(&app, &alice).await;
    }
    // A field that is not `file`, and a body that is not multipart.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/files")
        .header(header::AUTHORIZATION, format!("Bearer {}", alice.access))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .expect("request");
    assert_eq!(
        app.call(req).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_nothing_stored(&app, &alice).await;
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_taken_name_gets_a_new_one_and_nothing_is_overwritten(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let first = upload(
        &app,
        &alice,
        &[(b"report.txt", b"one"), (b"report.txt", b"two")],
    )
    .await;
    let second = upload(&app, &alice, &[(b"report.txt", b"three")]).await;
    // A file the agent wrote at uploads/notes.md takes that name too.
    app.insert_file(alice.id, "uploads/notes.md", b"agent's")
        .await;
    let decomposed = "re\u{301}sume\u{301}.md";
    let third = upload(
        &app,
        &alice,
        &[(decomposed.as_bytes(), b"x"), (b"notes.md", b"x")],
    )
    .await;
    let names: Vec<&str> = [&first, &second, &third]
        .iter()
        .flat_map(|r| r.body["files"].as_array().expect("files").iter())
        .filter_map(|f| f["filename"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "report.txt",
            "report (1).txt",
            "report (2).txt",
            "résumé.md",
            "notes (1).md"
        ]
    );
    for (reply, i, content) in [
        (&first, 0, "one"),
        (&first, 1, "two"),
        (&second, 0, "three"),
    ] {
        let id = reply.body["files"][i]["id"].as_str().expect("id");
        let r = app
            .get(&format!("/api/files/{id}/download"), &alice.access)
            .await;
        assert_eq!(r.bytes, content.as_bytes());
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_body_cut_off_halfway_stores_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    // Larger than the store's in-memory buffer, so a multipart upload is under
    // way when the body fails.
    let whole = multipart(&[(b"big.bin", &vec![7u8; 24 * 1024 * 1024])]);
    let half = Bytes::from(whole[..whole.len() / 2].to_vec());
    let chunks: Vec<Result<Bytes, std::io::Error>> = half
        .chunks(256 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .chain(std::iter::once(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "the client went away",
        ))))
        .collect();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/files")
        .header(header::AUTHORIZATION, format!("Bearer {}", alice.access))
        .header(header::CONTENT_TYPE, content_type())
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("request");
    let reply = app.call(req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    assert_nothing_stored(&app, &alice).await;
}
