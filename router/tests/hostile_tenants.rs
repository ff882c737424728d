//! Issue 15, "Hostile tenants" (findings 6, 8 and 10): what one paying user can
//! do to the router and to others. Multipart uploads are bounded (part headers,
//! part count), the storage quota counts every stored byte (agent-written files,
//! sync pushes, voice), speech slots are shared fairly, a disabled account is cut
//! off at once (API and open sockets), every answer carries the security headers,
//! billing's return link ignores a forged `Host`, sockets per user are capped, and
//! names refuse bidirectional overrides everywhere.

mod common;

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use common::{
    Reply, TestApp, User,
    live::{Live, wait_for},
    stripe::FakeStripe,
    voice::{Fake, start_fake},
};
use router::{admin, sync, voice::EngineKind};
use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUNDARY: &str = "hostile-boundary-3c1d9e";

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A multipart body with one `file` part per `(name, content)`.
fn multipart(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(app: &TestApp, user: &User, body: Vec<u8>) -> Reply {
    let req = Request::post("/api/files")
        .header(header::AUTHORIZATION, format!("Bearer {}", user.access))
        .header(header::CONTENT_TYPE, multipart_type())
        .body(Body::from(body))
        .expect("request");
    app.call(req).await
}

async fn file_rows(app: &TestApp, user: &User) -> Vec<(String, String, i64)> {
    sqlx::query_as("select kind, path, size from files where owner_id = $1 order by kind, path")
        .bind(user.id)
        .fetch_all(&app.db)
        .await
        .expect("rows")
}

async fn objects(app: &TestApp, user: &User) -> Vec<String> {
    let mut keys: Vec<String> = app
        .state
        .storage
        .list(&format!("users/{}", user.id))
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    keys
}

// --- Finding 6: multipart limits -------------------------------------------

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_endless_part_header_is_refused_and_the_routers_memory_stays_bounded(db: PgPool) {
    const HEADER_BYTES: usize = 256 * 1024 * 1024;
    let dir = common::process::data_dir();
    let db_url = common::process::database_url(&db).await;
    let mut router = common::process::start_router(&db_url, dir.path(), "http://127.0.0.1:9").await;
    let pid = router.child.id().expect("pid");
    let token = common::process::register(&router.url, "mallory@example.com").await;
    let (rss_before, hwm_before) = memory_kib(pid);

    // One part whose header line never ends, sent raw so nothing on the client
    // side buffers it.
    let preamble = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nX-Padding: "
    );
    let length = preamble.len() + HEADER_BYTES;
    let addr = router.url.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: {}\r\nContent-Length: {length}\r\n\r\n{preamble}",
        multipart_type()
    );
    // How much of the header went out before the router stopped reading.
    let sender = tokio::spawn(async move {
        if write.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < HEADER_BYTES {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(common::live::WAIT, async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match read.read(&mut buf).await {
                Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    })
    .await
    .expect("an answer or a close in time");
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("(closed without an answer)")
        .to_string();
    // The client may keep sending; the router's memory is what counts.
    let sent = tokio::time::timeout(common::live::WAIT, sender)
        .await
        .expect("the sender ends")
        .expect("sender task");
    let (rss_after, hwm_after) = memory_kib(pid);
    eprintln!(
        "endless part header: {status_line}; {} MiB of header sent; VmRSS {rss_before} kB -> {rss_after} kB, VmHWM {hwm_before} kB -> {hwm_after} kB",
        sent / (1024 * 1024)
    );
    assert!(
        status_line.contains(" 413 ") || status_line.contains(" 400 "),
        "{status_line}"
    );
    let bound_kib = 64 * 1024;
    assert!(
        rss_after.saturating_sub(rss_before) < bound_kib,
        "VmRSS grew from {rss_before} kB to {rss_after} kB"
    );
    assert!(
        hwm_after.saturating_sub(rss_before.max(hwm_before)) < bound_kib,
        "peak VmHWM grew from {hwm_before} kB to {hwm_after} kB"
    );
    let _ = router.child.kill().await;
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_long_part_header_is_answered_413_in_process(db: PgPool) {
    let app = TestApp::new(db).await;
    let mallory = app.register("mallory@example.com").await;
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nX-Padding: "
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    body.extend_from_slice(format!("\r\n\r\nhello\r\n--{BOUNDARY}--\r\n").as_bytes());
    let reply = upload(&app, &mallory, body).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("headers")),
        "{}",
        reply.body
    );
    assert!(file_rows(&app, &mallory).await.is_empty());
    assert!(objects(&app, &mallory).await.is_empty());
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn more_parts_than_a_request_may_carry_are_refused_and_store_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let mallory = app.register("mallory@example.com").await;
    let names: Vec<String> = (0..=router::uploads::MAX_FILES_PER_REQUEST)
        .map(|i| format!("part{i}.txt"))
        .collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let reply = upload(&app, &mallory, multipart(&files)).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "payload_too_large");
    assert!(file_rows(&app, &mallory).await.is_empty());
    assert!(objects(&app, &mallory).await.is_empty());
    // The most a request may carry still goes through.
    let reply = upload(&app, &mallory, multipart(&files[1..])).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

// --- Finding 8: the storage quota counts every stored byte ------------------

const SMALL_PLAN: &str = r#"{"free": {"storage_bytes": 3000}}"#;

async fn workspace_token(app: &TestApp, user: &User) -> String {
    router::workspaces::tokens::issue(&app.db, user.id)
        .await
        .expect("workspace token")
}

async fn push(app: &TestApp, token: &str, path: &str, bytes: &[u8]) -> Reply {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/workspace/files/{path}"))
        .header("x-api-key", token)
        .body(Body::from(bytes.to_vec()))
        .expect("request");
    app.call_sandbox(req).await
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_sync_push_over_the_quota_is_refused_and_agent_files_count_against_uploads(db: PgPool) {
    let app = TestApp::with_config(db, |c| c.plans = Some(SMALL_PLAN.into())).await;
    let mallory = app.register("mallory@example.com").await;
    let token = workspace_token(&app, &mallory).await;
    let first = push(&app, &token, "out/a.bin", &[1u8; 2000]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);

    let over = push(&app, &token, "out/b.bin", &[2u8; 2000]).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", over.body);
    assert_eq!(over.code(), "quota_exceeded");
    assert!(
        over.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("3000")),
        "{}",
        over.body
    );
    assert_eq!(
        file_rows(&app, &mallory).await,
        [("workspace".to_string(), "out/a.bin".to_string(), 2000)]
    );
    assert_eq!(
        objects(&app, &mallory).await,
        [format!("users/{}/workspace/out/a.bin", mallory.id)]
    );

    // Replacing a file needs only the difference.
    let grown = push(&app, &token, "out/a.bin", &[3u8; 2900]).await;
    assert_eq!(grown.status, StatusCode::OK, "{}", grown.body);

    // What the agent wrote fills the plan for uploads too.
    let refused = upload(&app, &mallory, multipart(&[("u.txt", &[4u8; 200])])).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        refused.body
    );
    assert_eq!(refused.code(), "quota_exceeded");

    // The agent's state archive counts and is refused alike.
    let archive = {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::none(),
        ));
        let data = vec![9u8; 4000];
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "big.json", data.as_slice())
            .expect("append");
        tar.into_inner().expect("tar").finish().expect("gzip")
    };
    let req = Request::put("/v1/workspace/state")
        .header("x-api-key", &token)
        .body(Body::from(archive))
        .expect("request");
    let state = app.call_sandbox(req).await;
    assert_eq!(
        state.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        state.body
    );
    assert_eq!(state.code(), "quota_exceeded");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_host_side_sync_stores_only_what_fits_and_reports_the_rest(db: PgPool) {
    let app = TestApp::with_config(db, |c| c.plans = Some(SMALL_PLAN.into())).await;
    let mallory = app.register("mallory@example.com").await;
    let dir = tempfile::tempdir().expect("dir");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).expect("mkdir");
    for name in ["a.bin", "b.bin", "c.bin"] {
        std::fs::write(ws.join(name), [7u8; 1400]).expect("write");
    }
    let room = router::quota::room(&app.db, &app.state.storage, &app.state.plans, mallory.id)
        .await
        .expect("room");
    let limits = sync::Limits {
        room: Some(room),
        ..sync::Limits::default()
    };
    let report = sync::save_workspace_with(&app.state.storage, &app.db, mallory.id, &ws, &limits)
        .await
        .expect("saved");
    assert_eq!((report.uploaded, report.over_quota), (2, 1), "{report:?}");
    let room = router::quota::room(&app.db, &app.state.storage, &app.state.plans, mallory.id)
        .await
        .expect("room");
    assert_eq!(room.used, 2800);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn files_the_agent_writes_past_the_quota_are_not_stored(db: PgPool) {
    let live = Live::with_config(db, |c| {
        c.plans = Some(SMALL_PLAN.into());
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mallory = live.app.register("mallory@example.com").await;
    let mut browser = live.browser(&mallory.access).await;
    browser.ready().await;
    live.api.push(sandbox::testing::Reply::tool_use(
        "toolu_fill",
        "Bash",
        json!({"command": "head -c 2000 /dev/zero > /workspace/a.bin && head -c 2000 /dev/zero > /workspace/b.bin && echo WROTE", "description": "fill"}),
    ));
    live.api.push(sandbox::testing::Reply::text(&["done"]));
    browser.message("write two files", None).await;
    let frames = browser.turn().await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("done")),
        "{frames:?}"
    );
    // Saved after the turn and again when the workspace sleeps: both under the quota.
    drop(browser);
    let hub = live.app.state.workspaces.hub(mallory.id);
    wait_for(|| hub.status() == router::proxy::Status::Asleep).await;
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("select kind, path, size from files where owner_id = $1 order by path")
            .bind(mallory.id)
            .fetch_all(&live.app.db)
            .await
            .expect("rows");
    assert_eq!(rows.len(), 1, "one of the two files fits: {rows:?}");
    assert_eq!(rows[0].2, 2000);
    let room = router::quota::room(
        &live.app.db,
        &live.app.state.storage,
        &live.app.state.plans,
        mallory.id,
    )
    .await
    .expect("room");
    assert!(room.used <= 3000, "{room:?}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_document_the_agent_saves_past_the_quota_is_refused(db: PgPool) {
    let live = Live::with_config(db, |c| c.plans = Some(SMALL_PLAN.into())).await;
    let mallory = live.app.register("mallory@example.com").await;
    live.api.push(sandbox::testing::Reply::tool_use(
        "toolu_doc",
        "mcp__jarvis__save_document",
        json!({"filename": "big.md", "content": "x".repeat(4000), "type": "markdown"}),
    ));
    live.api.push(sandbox::testing::Reply::text(&["tried"]));
    let mut browser = live.browser(&mallory.access).await;
    browser.ready().await;
    browser.message("save a big document", None).await;
    let frames = browser.turn().await;
    let results: Vec<_> = frames
        .iter()
        .filter(|f| f["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 1, "{frames:?}");
    assert_eq!(results[0]["is_error"], true, "{frames:?}");
    assert!(
        results[0]["content"].to_string().contains("3000"),
        "the quota is named: {frames:?}"
    );
    let documents: i64 = sqlx::query_scalar("select count(*) from documents where owner_id = $1")
        .bind(mallory.id)
        .fetch_one(&live.app.db)
        .await
        .expect("count");
    assert_eq!(documents, 0);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn spoken_answers_count_and_a_full_plan_stores_no_more_audio(db: PgPool) {
    let app = TestApp::with_config(db, |c| {
        c.plans = Some(r#"{"free": {"storage_bytes": 1000000}}"#.into());
    })
    .await;
    let alice = app.register("alice@example.com").await;
    let spoken = app
        .state
        .voice
        .speak(alice.id, "Hello Alice.")
        .await
        .expect("spoken");
    let (size,): (i64,) = sqlx::query_as("select size from files where id = $1")
        .bind(spoken.id)
        .fetch_one(&app.db)
        .await
        .expect("voice row");
    let room = router::quota::room(&app.db, &app.state.storage, &app.state.plans, alice.id)
        .await
        .expect("room");
    assert_eq!(room.used, size as u64, "the audio counts");

    // Fill the rest of the plan with agent files: no more audio is stored.
    let rest = vec![0u8; 1_000_000 - size as usize];
    app.insert_file(alice.id, "big.bin", &rest).await;
    let error = app
        .state
        .voice
        .speak(alice.id, "Hello again.")
        .await
        .expect_err("full");
    assert_eq!(error.code(), "quota_exceeded", "{error}");
    let voices: i64 =
        sqlx::query_scalar("select count(*) from files where owner_id = $1 and kind = 'voice'")
            .bind(alice.id)
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(voices, 1);
}

// --- Finding 10: the lower items --------------------------------------------

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn one_user_holding_speech_slots_does_not_keep_others_from_voice(db: PgPool) {
    let fake = Arc::new(Fake {
        status: 200,
        hang_on: Some("forever".into()),
        ..Fake::default()
    });
    let url = start_fake(fake.clone()).await;
    let app = TestApp::with_config(db, |c| {
        c.tts_engine = EngineKind::Openai;
        c.tts_url = Some(url);
        c.tts_api_key = Some("sk".into());
        c.tts_timeout = Duration::from_secs(5);
    })
    .await;
    let mallory = app.register("mallory@example.com").await;
    let alice = app.register("alice@example.com").await;
    let stuck: Vec<_> = (0..router::voice::PARALLEL_SYNTHESES)
        .map(|i| {
            let voice = app.state.voice.clone();
            let id = mallory.id;
            tokio::spawn(async move { voice.speak(id, &format!("Hang on forever {i}.")).await })
        })
        .collect();
    // Mallory's calls are in flight before Alice asks: one reaches the engine,
    // and the others get every slot they can (all of them, without a per-user
    // limit; the wait ends early then).
    tokio::time::timeout(common::live::WAIT, async {
        while fake.requests.lock().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("mallory's calls reach the engine");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while fake.requests.lock().await.len() < stuck.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let spoken = app.state.voice.speak(alice.id, "Hello Alice.").await;
    assert!(spoken.is_ok(), "alice gets her voice: {:?}", spoken.err());
    for call in stuck {
        let result = call.await.expect("task");
        assert_eq!(result.expect_err("stuck").code(), "voice_failed");
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_disabled_user_is_cut_off_at_once_from_the_api_and_open_sockets(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    let mut bobs = live.browser(&bob.access).await;
    bobs.ready().await;
    assert_eq!(
        live.app.get("/api/me", &alice.access).await.status,
        StatusCode::OK
    );

    let command = admin::Command::Disable {
        user: alice.email.clone(),
    };
    admin::run(&live.app.db, &command).await.expect("disabled");

    let me = live.app.get("/api/me", &alice.access).await;
    assert_eq!(me.status, StatusCode::FORBIDDEN, "{}", me.body);
    assert_eq!(me.code(), "account_disabled");
    let frames = browser.until(|f| f["type"] == "error").await;
    assert_eq!(
        frames.last().map(|f| f["code"].clone()),
        Some(json!("account_disabled")),
        "{frames:?}"
    );
    assert_eq!(browser.next().await, None, "the socket is closed");
    // A new socket is refused too; Bob is untouched.
    let again = live
        .browser_with(&alice.access, Some(&live.url.clone()))
        .await;
    assert!(again.is_err(), "a disabled user's socket opened");
    assert_eq!(
        live.app.get("/api/me", &bob.access).await.status,
        StatusCode::OK
    );
    assert_eq!(live.app.state.sockets.count(bob.id), 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn sockets_per_user_are_capped_and_a_closed_one_frees_its_place(db: PgPool) {
    let live = Live::with_config(db, |c| c.max_sockets_per_user = 2).await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    let first = live.browser(&alice.access).await;
    let _second = live.browser(&alice.access).await;
    let third = live
        .browser_with(&alice.access, Some(&live.url.clone()))
        .await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a third socket opened past the cap of 2"),
    }
    let _bobs = live.browser(&bob.access).await;
    drop(first);
    let sockets = live.app.state.sockets.clone();
    wait_for(|| sockets.count(alice.id) < 2).await;
    let _again = live.browser(&alice.access).await;
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn every_answer_carries_the_security_headers(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let answers = [
        ("app", app.send(Method::GET, "/", None, None).await),
        ("api", app.get("/api/me", &alice.access).await),
        ("401", app.send(Method::GET, "/api/me", None, None).await),
        (
            "400",
            app.get("/api/documents/not-a-uuid", &alice.access).await,
        ),
        ("404", app.get("/api/nothing-here", &alice.access).await),
        (
            "health",
            app.send(Method::GET, "/healthz", None, None).await,
        ),
    ];
    for (what, reply) in answers {
        let h = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let csp = h("content-security-policy");
        assert!(
            csp.contains("frame-ancestors 'none'"),
            "{what}: CSP {csp:?}"
        );
        assert!(csp.contains("script-src 'self'"), "{what}: CSP {csp:?}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
        assert!(
            h("strict-transport-security").contains("max-age="),
            "{what}"
        );
        assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_billing_return_link_ignores_a_forged_host(db: PgPool) {
    let stripe = FakeStripe::start(&["price_pro"]).await;
    let stripe_url = stripe.url();
    let app = TestApp::with_config(db, |c| {
        c.stripe_secret_key = Some("sk_test_jarvis".into());
        c.stripe_webhook_secret = Some("whsec_test_jarvis".into());
        c.stripe_api_base = stripe_url;
        c.stripe_price_pro = Some("price_pro".into());
        c.allowed_origins = vec!["https://jarvis.example.com".into()];
    })
    .await;
    let user = app.register("a@example.com").await;
    for origin in [Some("https://evil.example"), None] {
        let mut request = Request::post("/api/billing/checkout")
            .header("authorization", format!("Bearer {}", user.access))
            .header("content-type", "application/json")
            .header("host", "evil.example");
        if let Some(o) = origin {
            request = request.header("origin", o);
        }
        let reply = app
            .call(
                request
                    .body(Body::from(json!({"plan": "pro"}).to_string()))
                    .expect("request"),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let sessions = stripe.requests_to("/v1/checkout/sessions");
    let returns: Vec<&str> = sessions
        .iter()
        .flat_map(|s| [s.field("success_url"), s.field("cancel_url")])
        .flatten()
        .collect();
    assert_eq!(returns.len(), 4, "{returns:?}");
    for url in returns {
        assert!(
            url.starts_with("https://jarvis.example.com/account"),
            "{url}"
        );
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn bidi_overrides_are_refused_in_document_names_and_titles_like_uploads(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let hostile = "invoice\u{202E}fdp.exe";
    let uploaded = upload(&app, &alice, multipart(&[(hostile, b"x")])).await;
    assert_eq!(
        uploaded.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        uploaded.body
    );
    let message = uploaded.body["error"]["message"].clone();

    let doc = app.insert_document(alice.id, "notes.md", "hello").await;
    let renamed = app
        .send(
            Method::PUT,
            &format!("/api/documents/{doc}"),
            Some(&alice.access),
            Some(json!({"filename": hostile})),
        )
        .await;
    assert_eq!(
        renamed.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        renamed.body
    );
    assert_eq!(renamed.body["error"]["message"], message);

    let conversation = app.insert_conversation(alice.id, "Plans").await;
    let retitled = app
        .send(
            Method::PUT,
            &format!("/api/conversations/{conversation}"),
            Some(&alice.access),
            Some(json!({"title": "Plans \u{2067}reversed"})),
        )
        .await;
    assert_eq!(
        retitled.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        retitled.body
    );
    assert_eq!(retitled.body["error"]["message"], message);

    let (name, title): (String, String) = sqlx::query_as(
        "select d.filename, c.title from documents d, conversations c where d.id = $1 and c.id = $2",
    )
    .bind(doc)
    .bind(conversation)
    .fetch_one(&app.db)
    .await
    .expect("unchanged");
    assert_eq!((name.as_str(), title.as_str()), ("notes.md", "Plans"));
}
