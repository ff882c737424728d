//! The routes through which a pod's sandbox syncs its own workspace files and
//! agent state (`/v1/workspace/…`, workspace token), in-process: what one
//! sandbox stores comes back only to the same user, is stored exactly as the
//! host-side sync stores it, bad paths and archives change nothing, and a revoked
//! token reaches nothing.

mod common;

use std::io::Read;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use common::{Reply, TestApp, User};
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

async fn workspace_token(app: &TestApp, user: &User) -> String {
    router::workspaces::tokens::issue(&app.db, user.id)
        .await
        .expect("workspace token")
}

/// A request to the sandbox routes with `token` as `x-api-key`.
async fn call(
    app: &TestApp,
    method: Method,
    uri: &str,
    token: &str,
    body: impl Into<Body>,
) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-api-key", token)
        .body(body.into())
        .expect("request");
    app.call_sandbox(req).await
}

async fn put(app: &TestApp, token: &str, path: &str, bytes: &[u8]) -> Reply {
    let uri = format!("/v1/workspace/files/{path}");
    call(app, Method::PUT, &uri, token, bytes.to_vec()).await
}

async fn manifest(app: &TestApp, token: &str) -> Vec<Value> {
    let r = call(
        app,
        Method::GET,
        "/v1/workspace/files",
        token,
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["files"].as_array().expect("files").clone()
}

/// `(kind, path, size)` of every file row of `user`.
async fn rows(app: &TestApp, user: Uuid) -> Vec<(String, String, i64)> {
    sqlx::query_as("select kind, path, size from files where owner_id = $1 order by kind, path")
        .bind(user)
        .fetch_all(&app.db)
        .await
        .expect("rows")
}

/// Keys of every stored object under `users/{user}/`.
async fn objects(app: &TestApp, user: Uuid) -> Vec<String> {
    let mut keys: Vec<String> = app
        .state
        .storage
        .list(&format!("users/{user}"))
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    keys
}

async fn upload(app: &TestApp, user: &User, name: &str, bytes: &[u8]) -> Reply {
    let req = common::upload_request(&user.access, name.as_bytes(), "text/plain", bytes);
    let r = app.call(req).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn files_a_sandbox_stores_come_back_to_its_user_only(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let (a, b) = (
        workspace_token(&app, &alice).await,
        workspace_token(&app, &bob).await,
    );

    let r = put(&app, &a, "src/main.py", b"print('hi')\n").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["size"], 12);
    let r = put(&app, &a, "r%C3%A9sum%C3%A9.md", b"# Me\n").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Stored as the host-side sync stores it: row, key and sniffed type.
    let files = manifest(&app, &a).await;
    let paths: Vec<&str> = files.iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(paths, ["résumé.md", "src/main.py"]);
    let main = &files[1];
    assert_eq!(main["kind"], "workspace");
    assert_eq!(main["size"], 12);
    assert_eq!(
        main["sha256"],
        hex::encode(Sha256::digest(b"print('hi')\n"))
    );
    assert!(main.get("storage_key").is_none(), "keys stay in the router");
    let keys = objects(&app, alice.id).await;
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&format!("users/{}/workspace/src/main.py", alice.id)));
    let listed = app.get("/api/files", &alice.access).await;
    let listed = listed.body["files"].as_array().expect("files").clone();
    let main_row = listed
        .iter()
        .find(|f| f["path"] == "src/main.py")
        .expect("listed to the browser");
    assert_eq!(main_row["kind"], "workspace");
    assert_eq!(main_row["content_type"], "text/plain");

    let r = call(
        &app,
        Method::GET,
        "/v1/workspace/files/src/main.py",
        &a,
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes, b"print('hi')\n");

    // A changed file replaces the stored one.
    let r = put(&app, &a, "src/main.py", b"print('bye')\n").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &app,
        Method::GET,
        "/v1/workspace/files/src/main.py",
        &a,
        Body::empty(),
    )
    .await;
    assert_eq!(r.bytes, b"print('bye')\n");

    // Bob's token sees, reads and deletes nothing of Alice's.
    assert!(manifest(&app, &b).await.is_empty());
    for method in [Method::GET, Method::DELETE] {
        let r = call(
            &app,
            method.clone(),
            "/v1/workspace/files/src/main.py",
            &b,
            Body::empty(),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
    }
    let r = put(&app, &b, "src/main.py", b"bob's").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(manifest(&app, &b).await.len(), 1);
    let r = call(
        &app,
        Method::GET,
        "/v1/workspace/files/src/main.py",
        &a,
        Body::empty(),
    )
    .await;
    assert_eq!(r.bytes, b"print('bye')\n", "Bob's file is his own");

    // Deleting removes row and object; a second delete finds nothing.
    let r = call(
        &app,
        Method::DELETE,
        "/v1/workspace/files/src/main.py",
        &a,
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        rows(&app, alice.id).await,
        [("workspace".into(), "résumé.md".into(), 5)]
    );
    assert_eq!(objects(&app, alice.id).await.len(), 1);
    let r = call(
        &app,
        Method::DELETE,
        "/v1/workspace/files/src/main.py",
        &a,
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(manifest(&app, &b).await.len(), 1, "Bob's copy stays");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn uploads_are_restored_and_never_deleted_or_duplicated_by_the_sandbox(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let a = workspace_token(&app, &alice).await;
    upload(&app, &alice, "data.csv", b"a,b\n1,2\n").await;

    let files = manifest(&app, &a).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["path"], "uploads/data.csv");
    assert_eq!(files[0]["kind"], "upload");
    let r = call(
        &app,
        Method::GET,
        "/v1/workspace/files/uploads/data.csv",
        &a,
        Body::empty(),
    )
    .await;
    assert_eq!(r.bytes, b"a,b\n1,2\n");

    // The sandbox pushing the identical copy stores nothing new.
    let r = put(&app, &a, "uploads/data.csv", b"a,b\n1,2\n").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["same_as_upload"], true);
    assert_eq!(
        rows(&app, alice.id).await,
        [("upload".into(), "uploads/data.csv".into(), 8)]
    );
    assert_eq!(objects(&app, alice.id).await.len(), 1);

    // An edited copy is the agent's file, and the newer one is restored.
    let r = put(&app, &a, "uploads/data.csv", b"a,b\n1,3\n").await;
    assert_eq!(r.status, StatusCode::OK);
    let files = manifest(&app, &a).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["kind"], "workspace");
    let r = call(
        &app,
        Method::GET,
        "/v1/workspace/files/uploads/data.csv",
        &a,
        Body::empty(),
    )
    .await;
    assert_eq!(r.bytes, b"a,b\n1,3\n");

    // Deleting removes the agent's copy; the upload stays and is restored again.
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
        let r = call(
            &app,
            Method::DELETE,
            "/v1/workspace/files/uploads/data.csv",
            &a,
            Body::empty(),
        )
        .await;
        assert_eq!(r.status, status);
    }
    let files = manifest(&app, &a).await;
    assert_eq!(files[0]["kind"], "upload");
    assert_eq!(
        rows(&app, alice.id).await,
        [("upload".into(), "uploads/data.csv".into(), 8)]
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn paths_that_could_escape_are_refused_and_change_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let a = workspace_token(&app, &alice).await;
    put(&app, &a, "keep.txt", b"kept").await;
    let before = (rows(&app, alice.id).await, objects(&app, alice.id).await);
    for bad in [
        "a/%2E%2E/%2E%2E/x",
        "%2E%2E/x",
        "%2Fetc%2Fpasswd",
        "a%00b",
        "a%0Ab",
        "a%5Cb",
        "a//b",
        "./a",
        "node_modules/x.js",
        "src/__pycache__/m.pyc",
        "%FF",
    ] {
        for method in [Method::PUT, Method::GET, Method::DELETE] {
            let uri = format!("/v1/workspace/files/{bad}");
            let r = call(&app, method.clone(), &uri, &a, b"x".to_vec()).await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{method} {bad}: {}",
                r.body
            );
            if method == Method::PUT && bad != "%FF" {
                assert!(
                    r.body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("not a storable workspace path")),
                    "{bad}: {}",
                    r.body
                );
            }
        }
    }
    assert_eq!(
        (rows(&app, alice.id).await, objects(&app, alice.id).await),
        before
    );
}

/// A gzipped tar of `(path, bytes)` files.
fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw: the tar crate refuses to write the unsafe names tested here.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        tar.append(&header, *bytes).expect("append");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_state_archive_round_trips_and_a_bad_one_changes_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let (a, b) = (
        workspace_token(&app, &alice).await,
        workspace_token(&app, &bob).await,
    );
    let get_state = |token: String| {
        let app = &app;
        async move {
            call(
                app,
                Method::GET,
                "/v1/workspace/state",
                &token,
                Body::empty(),
            )
            .await
        }
    };
    assert_eq!(get_state(a.clone()).await.status, StatusCode::NOT_FOUND);

    let good = archive(&[
        (".claude/projects/-workspace/c1.jsonl", b"{\"a\":1}\n"),
        ("jarvis/conversations/c1.json", b"{\"seq\":3}"),
    ]);
    let r = call(&app, Method::PUT, "/v1/workspace/state", &a, good.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["files"], 2);
    let r = get_state(a.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes, good);
    // The host-side restore reads what the sandbox stored.
    let dir = tempfile::tempdir().expect("dir");
    let n = router::sync::restore_state(&app.state.storage, alice.id, dir.path())
        .await
        .expect("restore");
    assert_eq!(n, 2);
    let mut seq = String::new();
    std::fs::File::open(dir.path().join("jarvis/conversations/c1.json"))
        .expect("restored")
        .read_to_string(&mut seq)
        .expect("read");
    assert_eq!(seq, "{\"seq\":3}");

    // Not Bob's.
    assert_eq!(get_state(b.clone()).await.status, StatusCode::NOT_FOUND);

    // Garbage, an escaping entry, a cut-off archive: 400 and the old one stays.
    let escaping = archive(&[("../../etc/cron.d/x", b"* * * * * root sh")]);
    let cut = good[..good.len() / 2].to_vec();
    for bad in [b"not a tar".to_vec(), escaping, cut] {
        let r = call(&app, Method::PUT, "/v1/workspace/state", &a, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(get_state(a.clone()).await.bytes, good);
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_revoked_or_wrong_token_reaches_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let a = workspace_token(&app, &alice).await;
    put(&app, &a, "notes.txt", b"mine").await;
    let before = (rows(&app, alice.id).await, objects(&app, alice.id).await);
    router::workspaces::tokens::revoke(&app.db, alice.id)
        .await
        .expect("revoke");
    for token in [a.as_str(), alice.access.as_str(), "nonsense"] {
        for (method, uri) in [
            (Method::GET, "/v1/workspace/files"),
            (Method::GET, "/v1/workspace/files/notes.txt"),
            (Method::PUT, "/v1/workspace/files/notes.txt"),
            (Method::DELETE, "/v1/workspace/files/notes.txt"),
            (Method::GET, "/v1/workspace/state"),
            (Method::PUT, "/v1/workspace/state"),
        ] {
            let r = call(&app, method.clone(), uri, token, b"x".to_vec()).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        }
    }
    assert_eq!(
        (rows(&app, alice.id).await, objects(&app, alice.id).await),
        before
    );
    // The same routes are on the local sandboxes' socket app.
    use tower::ServiceExt;
    let fresh = workspace_token(&app, &alice).await;
    let sandbox = router::http::sandbox_app(app.state.clone());
    let response = sandbox
        .oneshot(
            Request::get("/v1/workspace/files/notes.txt")
                .header(header::AUTHORIZATION, format!("Bearer {fresh}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_file_over_the_cap_is_refused_and_stores_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let a = workspace_token(&app, &alice).await;
    put(&app, &a, "big.bin", b"small").await;
    let before = (rows(&app, alice.id).await, objects(&app, alice.id).await);
    // One byte over the sync's per-file cap, streamed (never whole in memory).
    let cap = router::sync::Limits::default().max_file_bytes;
    let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let chunks = cap / chunk.len() as u64;
    let body = futures::stream::iter(
        (0..chunks)
            .map(move |_| chunk.clone())
            .chain(std::iter::once(bytes::Bytes::from_static(b"!"))),
    )
    .map(Ok::<_, std::io::Error>);
    let r = call(
        &app,
        Method::PUT,
        "/v1/workspace/files/big.bin",
        &a,
        Body::from_stream(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_eq!(
        (rows(&app, alice.id).await, objects(&app, alice.id).await),
        before
    );
    let r = call(
        &app,
        Method::GET,
        "/v1/workspace/files/big.bin",
        &a,
        Body::empty(),
    )
    .await;
    assert_eq!(r.bytes, b"small", "the stored file is untouched");
}
