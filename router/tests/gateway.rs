//! The model gateway against the real database and the fake Anthropic API of
//! `sandbox::testing`: pass-through, credentials, usage rows, limits, errors.

mod common;

use std::time::{Duration, Instant};

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use common::{Reply, TestApp, refused_soon};
use http_body_util::BodyExt;
use router::workspaces::tokens;
use sandbox::testing::{FakeApi, Reply as Answer};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const REAL_KEY: &str = "sk-ant-real-key-for-tests";

/// A router whose gateway forwards to `fake`.
async fn gateway_app(db: PgPool, fake: &FakeApi) -> TestApp {
    let url = fake.url();
    TestApp::with_config(db, |c| {
        c.model_upstream = url;
        c.anthropic_api_key = Some(REAL_KEY.into());
    })
    .await
}

/// A registered user with a current workspace token.
async fn sandbox_user(app: &TestApp, email: &str) -> (Uuid, String) {
    let user = app.register(email).await;
    let token = tokens::issue(&app.db, user.id).await.expect("token issued");
    (user.id, token)
}

fn request_body(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "You are Jarvis."}],
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "system", "content": "<env>Primary working directory: /workspace</env>"}
        ],
        "tools": [], "metadata": {"user_id": "u"}, "thinking": {"type": "disabled"}
    })
}

fn messages_request(
    token: Option<&str>,
    conversation: Option<Uuid>,
    body: &Value,
) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages?beta=true")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01");
    if let Some(t) = token {
        req = req.header("x-api-key", t);
    }
    if let Some(c) = conversation {
        req = req.header("x-jarvis-conversation", c.to_string());
    }
    req.body(Body::from(body.to_string()))
        .expect("request builds")
}

async fn call(app: &TestApp, token: &str, stream: bool) -> Reply {
    app.call_sandbox(messages_request(Some(token), None, &request_body(stream)))
        .await
}

/// The usage rows of `owner`, waiting (bounded) until `n` exist: the meter
/// records them just after the answer ends.
async fn usage_rows(
    db: &PgPool,
    owner: Uuid,
    n: usize,
) -> Vec<(Option<Uuid>, String, i64, i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows: Vec<(Option<Uuid>, String, i64, i64, i64)> = sqlx::query_as(
            "select conversation_id, model, input_tokens, output_tokens, cost_micros from usage where owner_id = $1 order by created_at",
        )
        .bind(owner)
        .fetch_all(db)
        .await
        .expect("usage rows");
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_anthropic_error(reply: &Reply, status: StatusCode, kind: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["type"], "error", "{}", reply.body);
    assert_eq!(reply.body["error"]["type"], kind, "{}", reply.body);
}

/// Message ids are random; everything else of an answer must be identical.
fn without_message_ids(sse: &str) -> String {
    let mut out = String::new();
    let mut rest = sse;
    while let Some(at) = rest.find("\"msg_") {
        out.push_str(&rest[..at + 5]);
        rest = rest[at + 5..].trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    }
    out.push_str(rest);
    out
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn streamed_answers_pass_through_unchanged_and_as_they_arrive(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;

    // The fake sends message_start and a ping, then holds the rest for 1.5 s.
    fake.push(Answer::Stall(Duration::from_millis(1500)));
    let started = Instant::now();
    let response = app
        .sandbox
        .clone()
        .oneshot(messages_request(Some(&token), None, &request_body(true)))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(1), body.frame())
        .await
        .expect("the first chunk arrives before the upstream finishes")
        .expect("a frame")
        .expect("no error");
    let first_at = started.elapsed();
    let first = first.into_data().expect("data");
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    let mut through_gateway = first.to_vec();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the stream ends")
        .expect("reads");
    through_gateway.extend_from_slice(&rest.to_bytes());
    assert!(
        started.elapsed() >= first_at + Duration::from_millis(1000),
        "the rest came {:?} after the first chunk",
        started.elapsed() - first_at
    );

    // The same answer straight from the fake is byte-for-byte the same.
    fake.push(Answer::Stall(Duration::from_millis(10)));
    let direct = reqwest::Client::new()
        .post(format!("{}/v1/messages?beta=true", fake.url()))
        .header("x-api-key", REAL_KEY)
        .json(&request_body(true))
        .send()
        .await
        .expect("direct call")
        .text()
        .await
        .expect("direct body");
    assert_eq!(
        without_message_ids(&String::from_utf8_lossy(&through_gateway)),
        without_message_ids(&direct)
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_real_key_reaches_upstream_and_the_workspace_token_does_not(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;

    let reply = call(&app, &token, true).await;
    assert_eq!(reply.status, StatusCode::OK);
    let bearer = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages/count_tokens?beta=true")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(request_body(false).to_string()))
        .expect("request");
    let counted = app.call_sandbox(bearer).await;
    assert_eq!(counted.status, StatusCode::OK);
    assert_eq!(counted.body, json!({"input_tokens": 12}));

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/v1/messages?beta=true");
    assert_eq!(requests[1].path, "/v1/messages/count_tokens?beta=true");
    for r in &requests {
        assert_eq!(r.api_key.as_deref(), Some(REAL_KEY));
        assert_eq!(
            r.body,
            request_body(r.is_messages()),
            "the body is passed through"
        );
        assert!(!format!("{r:?}").contains(&token));
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn forged_revoked_and_browser_tokens_are_refused_and_never_forwarded(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let user = app.register("a@example.com").await;
    let revoked = tokens::issue(&app.db, user.id).await.expect("issued");
    tokens::revoke(&app.db, user.id).await.expect("revoked");
    let replaced = tokens::issue(&app.db, user.id).await.expect("issued");
    let _current = tokens::issue(&app.db, user.id).await.expect("reissued");

    let forged = format!("{}{}", tokens::PREFIX, "A".repeat(43));
    for token in [forged.as_str(), &revoked, &replaced, &user.access, REAL_KEY] {
        let reply = call(&app, token, true).await;
        assert_anthropic_error(&reply, StatusCode::UNAUTHORIZED, "authentication_error");
    }
    let anonymous = app
        .call_sandbox(messages_request(None, None, &request_body(true)))
        .await;
    assert_anthropic_error(&anonymous, StatusCode::UNAUTHORIZED, "authentication_error");
    assert!(fake.requests().is_empty(), "nothing reached the upstream");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn usage_is_recorded_for_the_tokens_owner_and_only_their_conversations(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (alice, alice_token) = sandbox_user(&app, "alice@example.com").await;
    let (bob, _) = sandbox_user(&app, "bob@example.com").await;
    let alices = app.insert_conversation(alice, "mine").await;
    let bobs = app.insert_conversation(bob, "his").await;

    for conversation in [alices, bobs] {
        let req = messages_request(Some(&alice_token), Some(conversation), &request_body(true));
        assert_eq!(app.call_sandbox(req).await.status, StatusCode::OK);
    }
    assert_eq!(call(&app, &alice_token, false).await.status, StatusCode::OK);

    let mut rows = usage_rows(&app.db, alice, 3).await;
    rows.sort();
    // Fake usage: 12 input, 5 output; sonnet costs 3 and 15 micro-dollars a token.
    let expected = |c| (c, "claude-sonnet-4-5".to_string(), 12, 5, 12 * 3 + 5 * 15);
    assert_eq!(
        rows,
        vec![expected(None), expected(None), expected(Some(alices))]
    );
    assert!(
        usage_rows(&app.db, bob, 0).await.is_empty(),
        "nothing billed to bob"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn requests_past_the_plan_rate_get_429_with_retry_after(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;
    wait_for_a_fresh_minute().await;

    for i in 0..20 {
        assert_eq!(
            call(&app, &token, false).await.status,
            StatusCode::OK,
            "request {i}"
        );
    }
    let limited = call(&app, &token, false).await;
    assert_anthropic_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limit_error");
    let message = limited.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("20 model requests per minute"),
        "{message}"
    );
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("retry-after");
    assert!((1..=60).contains(&retry_after));
    assert_eq!(limited.headers["x-should-retry"], "false");
    assert_eq!(fake.message_requests().len(), 20);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_redis_rate_limit_holds_across_router_processes(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let prefix = format!("jarvis-test:{}:", Uuid::new_v4());
    let with_redis = |c: &mut router::config::Config| {
        c.model_upstream = fake.url();
        c.redis_url = Some("redis://127.0.0.1:6379".into());
        c.redis_key_prefix = prefix.clone();
    };
    let one = TestApp::with_config(db.clone(), with_redis).await;
    let two = TestApp::with_config(db, with_redis).await;
    let (_, token) = sandbox_user(&one, "a@example.com").await;
    wait_for_a_fresh_minute().await;

    for i in 0..10 {
        assert_eq!(
            call(&one, &token, false).await.status,
            StatusCode::OK,
            "one {i}"
        );
        assert_eq!(
            call(&two, &token, false).await.status,
            StatusCode::OK,
            "two {i}"
        );
    }
    // Each process has seen 10 of the free plan's 20: only a shared count refuses.
    for app in [&one, &two] {
        let limited = call(app, &token, false).await;
        assert_anthropic_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limit_error");
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_exhausted_quota_is_refused_with_a_clear_message(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (id, token) = sandbox_user(&app, "a@example.com").await;
    // Last month's usage does not count; this month's reaches the free quota.
    sqlx::query(
        "insert into usage (owner_id, model, input_tokens, output_tokens, created_at) values
         ($1, 'm', 5000000, 0, now() - interval '40 days'), ($1, 'm', 999990, 9, now())",
    )
    .bind(id)
    .execute(&app.db)
    .await
    .expect("usage inserted");
    assert_eq!(call(&app, &token, true).await.status, StatusCode::OK);
    usage_rows(&app.db, id, 3).await;

    let refused = call(&app, &token, true).await;
    assert_anthropic_error(&refused, StatusCode::TOO_MANY_REQUESTS, "rate_limit_error");
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with(
            "Your free plan's monthly token quota (1,000,000) is used up; upgrade or wait until "
        ),
        "{message}"
    );
    assert_eq!(refused.headers["x-should-retry"], "false");
    assert_eq!(fake.message_requests().len(), 1);

    sqlx::query("update users set tier = 'pro' where id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .expect("upgraded");
    assert_eq!(
        call(&app, &token, true).await.status,
        StatusCode::OK,
        "an upgrade lifts it"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn disabled_accounts_and_lapsed_subscriptions_are_refused(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let url = fake.url();
    let billing = TestApp::with_config(db.clone(), |c| {
        c.model_upstream = url;
        c.stripe_secret_key = Some("sk_test_x".into());
        // A free plan that includes the model (the default does not: billing.rs).
        c.plans = Some(r#"{"free": {"model": true}}"#.into());
    })
    .await;
    let (id, token) = sandbox_user(&billing, "a@example.com").await;
    billing.verify_email(id).await;
    // A paid plan whose subscription is not active is refused, on the first call.
    sqlx::query("update users set tier = 'pro', subscription_active = false where id = $1")
        .bind(id)
        .execute(&billing.db)
        .await
        .expect("pro, lapsed");
    let lapsed = call(&billing, &token, true).await;
    assert_anthropic_error(&lapsed, StatusCode::FORBIDDEN, "permission_error");
    assert_eq!(
        lapsed.body["error"]["message"],
        "your subscription is not active"
    );
    assert_eq!(fake.message_requests().len(), 0);
    // Such a free plan needs no subscription, billing or not.
    sqlx::query("update users set tier = 'free' where id = $1")
        .bind(id)
        .execute(&billing.db)
        .await
        .expect("free");
    assert_eq!(call(&billing, &token, true).await.status, StatusCode::OK);
    // A subscription that lapses while the account is remembered (`http::standing`)
    // is refused within the time an account is remembered.
    sqlx::query("update users set tier = 'pro', subscription_active = false where id = $1")
        .bind(id)
        .execute(&billing.db)
        .await
        .expect("pro, lapsed");
    let lapsed = refused_soon(|| call(&billing, &token, true)).await;
    assert_anthropic_error(&lapsed, StatusCode::FORBIDDEN, "permission_error");

    let free = gateway_app(db, &fake).await;
    assert_eq!(
        call(&free, &token, true).await.status,
        StatusCode::OK,
        "billing off"
    );
    // Disabled behind the router's back (no `router admin disable`, whose
    // notification makes every router forget the account at once).
    sqlx::query("update users set disabled_at = now() where id = $1")
        .bind(id)
        .execute(&free.db)
        .await
        .expect("disabled");
    let disabled = refused_soon(|| call(&free, &token, true)).await;
    assert_anthropic_error(&disabled, StatusCode::FORBIDDEN, "permission_error");
    // A new router never saw the account: refused on its first call.
    let fresh = gateway_app(free.db.clone(), &fake).await;
    let forwarded = fake.message_requests().len();
    let disabled = call(&fresh, &token, true).await;
    assert_anthropic_error(&disabled, StatusCode::FORBIDDEN, "permission_error");
    assert_eq!(
        fake.message_requests().len(),
        forwarded,
        "nothing forwarded"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn upstream_errors_reach_the_sandbox_with_their_status(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db.clone(), &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;
    for (status, kind) in [
        (429, "rate_limit_error"),
        (529, "overloaded_error"),
        (500, "api_error"),
    ] {
        fake.push(Answer::Status(status));
        let reply = call(&app, &token, true).await;
        let status = StatusCode::from_u16(status).expect("status");
        assert_anthropic_error(&reply, status, kind);
    }

    let unreachable =
        TestApp::with_config(db, |c| c.model_upstream = "http://127.0.0.1:1".into()).await;
    let reply = call(&unreachable, &token, true).await;
    assert_anthropic_error(&reply, StatusCode::BAD_GATEWAY, "api_error");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn without_a_model_key_calls_are_refused_naming_it_and_never_forwarded(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let url = fake.url();
    for key in [None, Some("  ")] {
        let app = TestApp::with_config(db.clone(), |c| {
            c.model_upstream = url.clone();
            c.anthropic_api_key = key.map(str::to_string);
        })
        .await;
        let email = format!("{}@example.com", Uuid::new_v4().simple());
        let (_, token) = sandbox_user(&app, &email).await;
        let reply = call(&app, &token, true).await;
        assert_anthropic_error(&reply, StatusCode::UNAUTHORIZED, "authentication_error");
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("ANTHROPIC_API_KEY"), "{message}");
        // Final: the CLI must not retry what cannot succeed.
        assert_eq!(reply.headers["x-should-retry"], "false");
        // A bad workspace token is still told so first.
        let forged = call(&app, "jw_forged", true).await;
        assert_anthropic_error(&forged, StatusCode::UNAUTHORIZED, "authentication_error");
        assert!(!forged.body.to_string().contains("ANTHROPIC_API_KEY"));
    }
    assert!(fake.requests().is_empty(), "nothing reached the model");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_key_the_upstream_refuses_is_named_as_the_routers(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;
    fake.push(Answer::Status(401));
    let reply = call(&app, &token, true).await;
    assert_anthropic_error(&reply, StatusCode::UNAUTHORIZED, "authentication_error");
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refused the router's ANTHROPIC_API_KEY")
            && message.contains("fake upstream answered 401"),
        "{message}"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn large_prompts_pass_while_the_browser_api_keeps_its_limit(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;
    let mut big = request_body(true);
    // 1.5 MiB: over the browser API's 1 MiB, under the fake's own 2 MiB.
    big["messages"][0]["content"] = json!("x".repeat(1536 * 1024));
    let reply = app
        .call_sandbox(messages_request(Some(&token), None, &big))
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    let mut huge = request_body(true);
    huge["messages"][0]["content"] = json!("x".repeat(33 * 1024 * 1024));
    let reply = app
        .call_sandbox(messages_request(Some(&token), None, &huge))
        .await;
    assert_anthropic_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    assert_eq!(fake.message_requests().len(), 1);
}

/// A call to `uri` (`/v1/messages` or `/v1/messages/count_tokens`) with `body`.
fn call_to(uri: &str, token: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", token)
        .body(Body::from(body.to_string()))
        .expect("request builds")
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_public_listener_serves_no_sandbox_routes_even_with_a_workspace_token(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;
    let stored = app
        .call_sandbox(
            Request::put("/v1/workspace/files/notes.txt")
                .header("x-api-key", &token)
                .body(Body::from("mine"))
                .expect("request"),
        )
        .await;
    assert!(stored.status.is_success(), "{}", stored.body);
    let body = request_body(false);
    for (method, uri) in [
        (Method::POST, "/v1/messages"),
        (Method::POST, "/v1/messages?beta=true"),
        (Method::POST, "/v1/messages/count_tokens"),
        (Method::GET, "/v1/workspace/files"),
        (Method::GET, "/v1/workspace/files/notes.txt"),
        (Method::PUT, "/v1/workspace/files/notes.txt"),
        (Method::GET, "/v1/workspace/state"),
        (Method::POST, "/v1/voice/speak"),
    ] {
        for auth in ["x-api-key", "authorization"] {
            let value = if auth == "x-api-key" {
                token.clone()
            } else {
                format!("Bearer {token}")
            };
            let req = Request::builder()
                .method(method.clone())
                .uri(uri)
                .header("content-type", "application/json")
                .header(auth, value)
                .body(Body::from(body.to_string()))
                .expect("request");
            let reply = app.call(req).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}");
            assert_eq!(reply.code(), "not_found", "{method} {uri}");
        }
    }
    assert!(fake.requests().is_empty(), "nothing reached the upstream");
    // The same token on the sandboxes' app is served.
    assert_eq!(call(&app, &token, false).await.status, StatusCode::OK);
    let files = app
        .call_sandbox(
            Request::get("/v1/workspace/files/notes.txt")
                .header("x-api-key", &token)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(files.status, StatusCode::OK);
    assert_eq!(files.bytes, b"mine");
    // And the sandboxes' app has no browser API and no metrics.
    for uri in ["/metrics", "/api/me", "/healthz"] {
        let reply = app
            .call_sandbox(Request::get(uri).body(Body::empty()).expect("request"))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn calls_outside_the_plan_are_refused_naming_what_and_never_forwarded(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = request_body(true);
        change(&mut body);
        body
    };
    let tool = |kind: &str, name: &str| json!([{"type": kind, "name": name}]);
    let cases: Vec<(Value, &str)> = vec![
        (
            with(&|b: &mut Value| b["model"] = json!("claude-3-opus-20240229")),
            "the model claude-3-opus-20240229 is not available on the free plan",
        ),
        (
            with(&|b: &mut Value| b["max_tokens"] = json!(1_000_000)),
            "max_tokens 1000000 is more than the free plan allows (128000)",
        ),
        (
            with(&|b: &mut Value| b["tools"] = tool("web_search_20250305", "web_search")),
            "the server tool web_search_20250305 is not available on the free plan",
        ),
        (
            with(&|b: &mut Value| b["tools"] = tool("web_fetch_20250910", "web_fetch")),
            "the server tool web_fetch_20250910 is not available",
        ),
        (
            with(&|b: &mut Value| b["tools"] = tool("code_execution_20250825", "code_execution")),
            "the server tool code_execution_20250825 is not available",
        ),
        (
            with(&|b: &mut Value| {
                b["mcp_servers"] =
                    json!([{"type": "url", "url": "https://attacker.example/mcp", "name": "x"}])
            }),
            "mcp_servers are not available on the free plan",
        ),
        (
            with(&|b: &mut Value| {
                if let Some(o) = b.as_object_mut() {
                    o.remove("model");
                }
            }),
            "the request names no model",
        ),
    ];
    for (body, expected) in &cases {
        for uri in ["/v1/messages?beta=true", "/v1/messages/count_tokens"] {
            let reply = app.call_sandbox(call_to(uri, &token, body)).await;
            assert_anthropic_error(&reply, StatusCode::BAD_REQUEST, "invalid_request_error");
            let message = reply.body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(expected), "{uri}: {message}");
        }
    }
    let not_json = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages")
        .header("x-api-key", &token)
        .body(Body::from("{not json"))
        .expect("request");
    let reply = app.call_sandbox(not_json).await;
    assert_anthropic_error(&reply, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(fake.requests().is_empty(), "nothing reached the upstream");
    // Client tools, as the CLI sends them, pass.
    let client_tools = with(&|b: &mut Value| {
        b["tools"] = json!([{"name": "Bash", "input_schema": {"type": "object"}},
                            {"name": "mcp__jarvis__speak", "type": "custom", "input_schema": {}}])
    });
    let reply = app
        .call_sandbox(call_to("/v1/messages", &token, &client_tools))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(fake.message_requests().len(), 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn each_plan_decides_its_models_max_tokens_and_server_tools(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let url = fake.url();
    let app = TestApp::with_config(db, |c| {
        c.model_upstream = url;
        c.plans = Some(
            r#"{"free": {"models": ["claude-haiku-*"], "max_tokens": 1000},
                "pro": {"models": ["claude-*"], "max_tokens": 200000, "server_tools": true}}"#
                .into(),
        );
    })
    .await;
    let (id, token) = sandbox_user(&app, "a@example.com").await;
    let body = |model: &str, max_tokens: u64, tools: Value| {
        json!({"model": model, "max_tokens": max_tokens, "stream": false,
               "messages": [{"role": "user", "content": "hi"}], "tools": tools})
    };
    let search = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    let send = |body: Value| app.call_sandbox(call_to("/v1/messages", &token, &body));

    assert_eq!(
        send(body("claude-haiku-5-5", 1000, json!([]))).await.status,
        StatusCode::OK
    );
    let reply = send(body("claude-sonnet-4-5", 1000, json!([]))).await;
    assert_anthropic_error(&reply, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert_eq!(
        reply.body["error"]["message"],
        "the model claude-sonnet-4-5 is not available on the free plan (available: claude-haiku-*)"
    );
    let reply = send(body("claude-haiku-5-5", 1001, json!([]))).await;
    assert_anthropic_error(&reply, StatusCode::BAD_REQUEST, "invalid_request_error");
    let reply = send(body("claude-haiku-5-5", 10, search.clone())).await;
    assert_anthropic_error(&reply, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert_eq!(fake.message_requests().len(), 1);

    sqlx::query("update users set tier = 'pro' where id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .expect("upgraded");
    for tools in [json!([]), search] {
        let reply = send(body("claude-sonnet-4-5", 150_000, tools)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!(fake.message_requests().len(), 3);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn only_known_beta_headers_reach_the_upstream(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;
    let with_betas = |betas: &str| {
        let mut req = messages_request(Some(&token), None, &request_body(false));
        req.headers_mut()
            .insert("anthropic-beta", betas.parse().expect("header"));
        req
    };
    let cli = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27";
    assert_eq!(
        app.call_sandbox(with_betas(cli)).await.status,
        StatusCode::OK
    );
    let mixed =
        "claude-code-20250219, files-api-2025-04-14,web-fetch-2025-09-10,mcp-client-2025-04-04";
    assert_eq!(
        app.call_sandbox(with_betas(mixed)).await.status,
        StatusCode::OK
    );
    let unknown = "files-api-2025-04-14";
    assert_eq!(
        app.call_sandbox(with_betas(unknown)).await.status,
        StatusCode::OK
    );
    let seen: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.beta).collect();
    assert_eq!(
        seen,
        vec![
            Some(cli.to_string()),
            Some("claude-code-20250219".to_string()),
            None
        ]
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn count_tokens_shares_the_rate_limit_and_is_counted_in_metrics(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let app = gateway_app(db, &fake).await;
    let (_, token) = sandbox_user(&app, "a@example.com").await;
    let count_tokens = || {
        app.call_sandbox(call_to(
            "/v1/messages/count_tokens",
            &token,
            &request_body(false),
        ))
    };
    wait_for_a_fresh_minute().await;

    for i in 0..10 {
        assert_eq!(count_tokens().await.status, StatusCode::OK, "count {i}");
        assert_eq!(
            call(&app, &token, false).await.status,
            StatusCode::OK,
            "message {i}"
        );
    }
    // The free plan's 20 a minute are used up by both kinds together.
    for _ in 0..5 {
        let limited = count_tokens().await;
        assert_anthropic_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limit_error");
        assert!(limited.headers.contains_key("retry-after"));
    }
    let limited = call(&app, &token, false).await;
    assert_anthropic_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limit_error");
    let counted = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("count_tokens"))
        .count();
    assert_eq!((counted, fake.message_requests().len()), (10, 10));

    let refused = app
        .call_sandbox(call_to(
            "/v1/messages/count_tokens",
            &token,
            &json!({"model": "claude-3-haiku", "messages": []}),
        ))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let metrics = String::from_utf8(app.metrics().await.bytes).expect("text");
    for line in [
        r#"jarvis_gateway_calls_total{endpoint="count_tokens",outcome="forwarded"} 10"#,
        r#"jarvis_gateway_calls_total{endpoint="count_tokens",outcome="rate_limited"} 5"#,
        r#"jarvis_gateway_calls_total{endpoint="count_tokens",outcome="refused"} 1"#,
        r#"jarvis_gateway_calls_total{endpoint="messages",outcome="forwarded"} 10"#,
        r#"jarvis_gateway_calls_total{endpoint="messages",outcome="rate_limited"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

/// Rate-limit tests count within one fixed minute window: start early in one.
async fn wait_for_a_fresh_minute() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let into_minute = secs % 60.0;
    if into_minute > 45.0 {
        tokio::time::sleep(Duration::from_secs_f64(60.0 - into_minute + 0.1)).await;
    }
}
