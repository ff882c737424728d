//! What a sandbox pushes over HTTP (`/v1/workspace/events`, `/v1/workspace/calls`,
//! workspace token), in-process: a turn's events are stored exactly once however
//! often (and by however many routers at once) a batch is posted, only in the
//! token's user's conversations; malformed bodies and bad tokens change nothing;
//! heartbeats report running turns; a retried `save_document` saves one document.

mod common;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use common::{
    Reply, TestApp, User,
    frames::{Frames, stored},
};
use sandbox::protocol::SandboxFrame;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

async fn workspace_token(app: &TestApp, user: &User) -> String {
    router::workspaces::tokens::issue(&app.db, user.id)
        .await
        .expect("workspace token")
}

/// POSTs `body` (raw) to the sandbox routes with `token` as `x-api-key`.
async fn post_raw(app: &TestApp, uri: &str, token: Option<&str>, body: String) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        req = req.header("x-api-key", token);
    }
    app.call_sandbox(req.body(Body::from(body)).expect("request"))
        .await
}

async fn post_events(app: &TestApp, token: &str, body: &Value) -> Reply {
    post_raw(app, "/v1/workspace/events", Some(token), body.to_string()).await
}

async fn post_call(app: &TestApp, token: &str, body: &Value) -> Reply {
    post_raw(app, "/v1/workspace/calls", Some(token), body.to_string()).await
}

/// Opens a turn (user message + empty assistant message) as the router does.
async fn open(app: &TestApp, user: &User, conversation: Uuid, content: &str) -> Uuid {
    router::transcript::open_turn(
        &app.db,
        user.id,
        conversation,
        router::transcript::NewMessage::text(content),
    )
    .await
    .expect("turn opens")
    .message_id
}

fn report(
    conversation: Uuid,
    message: Option<Uuid>,
    events: &[SandboxFrame],
    running: u32,
) -> Value {
    json!({
        "batches": [{"conversation_id": conversation, "message_id": message, "events": events}],
        "running_turns": running,
    })
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Message {
    id: Uuid,
    role: String,
    content: String,
    events: Value,
    complete: bool,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
}

async fn messages(db: &PgPool, conversation: Uuid) -> Vec<Message> {
    sqlx::query_as(
        "select id, role, content, events, complete, input_tokens, output_tokens from messages
         where conversation_id = $1 order by position",
    )
    .bind(conversation)
    .fetch_all(db)
    .await
    .expect("messages")
}

async fn last_seq(db: &PgPool, conversation: Uuid) -> i64 {
    sqlx::query_scalar("select last_seq from conversations where id = $1")
        .bind(conversation)
        .fetch_one(db)
        .await
        .expect("conversation")
}

/// The value of `jarvis_workspace_events_total{outcome=…}` on /metrics.
async fn events_metric(app: &TestApp, outcome: &str) -> u64 {
    let text = app.metrics().await.body;
    let text = text.as_str().expect("metrics text");
    let prefix = format!("jarvis_workspace_events_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("a number"))
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_batch_posted_twice_is_stored_once_and_done_completes_the_answer(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("a@example.com").await;
    let token = workspace_token(&app, &user).await;
    let c = Uuid::new_v4();
    let message = open(&app, &user, c, "Write a plan").await;
    let mut f = Frames::new(c);
    let frames = vec![
        f.turn_of(Some(message)),
        f.text("Here is "),
        f.document(),
        f.text("your plan."),
        f.done(120, 45),
    ];
    let body = report(c, Some(message), &frames, 0);

    for attempt in 0..2 {
        let r = post_events(&app, &token, &body).await;
        assert_eq!(r.status, StatusCode::OK, "attempt {attempt}: {}", r.body);
        assert_eq!(
            r.body,
            json!({"stored": [{"conversation_id": c, "last_seq": 5}]})
        );
    }
    let rows = messages(&app.db, c).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].id, message);
    assert_eq!(rows[1].content, "Here is your plan.");
    assert_eq!(rows[1].events, json!([stored(&frames[2], 8)]));
    assert!(rows[1].complete);
    assert_eq!(
        (rows[1].input_tokens, rows[1].output_tokens),
        (Some(120), Some(45))
    );
    assert_eq!(last_seq(&app.db, c).await, 5);
    assert_eq!(events_metric(&app, "stored").await, 5);
    assert_eq!(events_metric(&app, "duplicate").await, 5);

    // The conversation reads back through the browser API as stored.
    let r = app
        .get(&format!("/api/conversations/{c}"), &user.access)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.to_string().contains("Here is your plan."));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_same_batch_posted_by_two_routers_at_once_is_stored_once(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("a@example.com").await;
    let token = workspace_token(&app, &user).await;
    let c = Uuid::new_v4();
    let message = open(&app, &user, c, "Count").await;
    let mut f = Frames::new(c);
    let mut expected = String::new();
    for round in 0..10 {
        let mut frames = Vec::new();
        if round == 0 {
            frames.push(f.turn_of(Some(message)));
        }
        for i in 0..20 {
            let delta = format!("{round}.{i} ");
            expected.push_str(&delta);
            frames.push(f.text(&delta));
        }
        let body = report(c, Some(message), &frames, 1);
        let (a, b) = tokio::join!(
            post_events(&app, &token, &body),
            post_events(&app, &token, &body)
        );
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(b.status, StatusCode::OK, "{}", b.body);
        assert_eq!(a.body, b.body);
    }
    let rows = messages(&app.db, c).await;
    assert_eq!(rows[1].content, expected);
    assert!(!rows[1].complete);
    assert_eq!(last_seq(&app.db, c).await, 201);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn events_at_or_below_the_stored_seq_are_skipped_and_an_error_ends_the_turn_incomplete(
    db: PgPool,
) {
    let app = TestApp::new(db).await;
    let user = app.register("a@example.com").await;
    let token = workspace_token(&app, &user).await;
    let c = Uuid::new_v4();
    let message = open(&app, &user, c, "Go").await;
    let mut f = Frames::new(c);
    let (t, a, b) = (f.turn_of(Some(message)), f.text("one "), f.text("two "));
    let r = post_events(
        &app,
        &token,
        &report(c, Some(message), &[t.clone(), a.clone()], 1),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A retried batch that grew: the old events are skipped, the new ones added.
    let error = f.error();
    let r = post_events(
        &app,
        &token,
        &report(c, Some(message), &[t, a, b, error.clone()], 0),
    )
    .await;
    assert_eq!(r.body["stored"][0]["last_seq"], 4);
    let rows = messages(&app.db, c).await;
    assert_eq!(rows[1].content, "one two ");
    assert_eq!(rows[1].events, json!([stored(&error, 8)]));
    assert!(!rows[1].complete);
    assert_eq!(rows[1].input_tokens, None);

    // Without a message id the events go to the newest answer of the conversation.
    let next = open(&app, &user, c, "Again").await;
    let (t, x, d) = (f.turn(), f.text("three"), f.done(1, 2));
    let r = post_events(&app, &token, &report(c, None, &[t, x, d], 0)).await;
    assert_eq!(r.body["stored"][0]["last_seq"], 7);
    let rows = messages(&app.db, c).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1].content, "one two ");
    assert_eq!((rows[3].id, rows[3].content.as_str()), (next, "three"));
    assert!(rows[3].complete);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn another_users_conversation_or_message_is_never_touched(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let mallory = app.register("mallory@example.com").await;
    let token = workspace_token(&app, &mallory).await;
    let ca = Uuid::new_v4();
    let alice_message = open(&app, &alice, ca, "secret plans").await;
    let before = messages(&app.db, ca).await;

    // Mallory's sandbox names Alice's conversation: skipped, still 200.
    let mut f = Frames::new(ca);
    let frames = [f.turn(), f.text("injected"), f.done(1, 1)];
    let r = post_events(&app, &token, &report(ca, Some(alice_message), &frames, 0)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"stored": []}));

    // …or its own conversation with Alice's message: stored in its own answer.
    let cm = Uuid::new_v4();
    let own = open(&app, &mallory, cm, "hi").await;
    let mut g = Frames::new(cm);
    let frames = [g.turn_of(Some(alice_message)), g.text("mine"), g.done(1, 1)];
    let r = post_events(&app, &token, &report(cm, Some(alice_message), &frames, 0)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["stored"][0]["last_seq"], 3);

    assert_eq!(messages(&app.db, ca).await, before);
    assert_eq!(last_seq(&app.db, ca).await, 0);
    let rows = messages(&app.db, cm).await;
    assert_eq!((rows[1].id, rows[1].content.as_str()), (own, "mine"));
    assert_eq!(events_metric(&app, "foreign").await, 3);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_bad_token_or_a_malformed_body_changes_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("a@example.com").await;
    let token = workspace_token(&app, &user).await;
    let c = Uuid::new_v4();
    let message = open(&app, &user, c, "Go").await;
    let mut f = Frames::new(c);
    let good = report(c, Some(message), &[f.turn(), f.text("hello")], 1);

    for bad in [None, Some("jw_not-a-token"), Some(user.access.as_str())] {
        let r = post_raw(&app, "/v1/workspace/events", bad, good.to_string()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad:?}: {}", r.body);
        let r = post_raw(&app, "/v1/workspace/calls", bad, "{}".into()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad:?}: {}", r.body);
    }
    // A good batch beside a bad one: the whole body is refused.
    let mut other = Frames::new(Uuid::new_v4());
    let mixed = json!({
        "batches": [
            good["batches"][0],
            {"conversation_id": c, "events": [other.text("of another conversation")]},
        ],
        "running_turns": 1,
    });
    let no_seq = json!({
        "batches": [{"conversation_id": c, "events": [{"type": "error", "code": "x", "message": "y"}]}],
        "running_turns": 1,
    });
    let mut no_running = good.clone();
    no_running
        .as_object_mut()
        .expect("object")
        .remove("running_turns");
    for bad in [
        "not json".to_string(),
        json!({"batches": [{"conversation_id": "nope", "events": []}], "running_turns": 0})
            .to_string(),
        json!({"batches": [{"conversation_id": c, "events": [{"type": "text", "seq": 1}]}], "running_turns": 0})
            .to_string(),
        mixed.to_string(),
        no_seq.to_string(),
        no_running.to_string(),
    ] {
        let r = post_raw(&app, "/v1/workspace/events", Some(&token), bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
        assert!(
            r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            r.body
        );
    }
    // A body past the cap is refused as such.
    let mut f = Frames::new(c);
    let huge = report(c, None, &[f.text(&"x".repeat(9 * 1024 * 1024))], 1);
    let r = post_events(&app, &token, &huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    let rows = messages(&app.db, c).await;
    assert_eq!(rows[1].content, "");
    assert_eq!(last_seq(&app.db, c).await, 0);
    assert!(!app.state.workspaces.hub(user.id).turn_running());

    // The same batch, well formed and signed, is stored (bearer works too).
    let req = Request::post("/v1/workspace/events")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(good.to_string()))
        .expect("request");
    let r = app.call_sandbox(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(messages(&app.db, c).await[1].content, "hello");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_heartbeat_reports_the_sandboxs_running_turns(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("a@example.com").await;
    let token = workspace_token(&app, &user).await;
    let hub = app.state.workspaces.hub(user.id);
    assert!(!hub.turn_running());
    let before = hub.last_activity();

    let r = post_events(&app, &token, &json!({"batches": [], "running_turns": 1})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"stored": []}));
    assert!(hub.turn_running());
    assert!(hub.last_activity() >= before);

    let r = post_events(&app, &token, &json!({"batches": [], "running_turns": 0})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!hub.turn_running());
}

async fn document_count(db: &PgPool, owner: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from documents where owner_id = $1")
        .bind(owner)
        .fetch_one(db)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_retried_save_document_saves_one_document(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("a@example.com").await;
    let other = app.register("b@example.com").await;
    let token = workspace_token(&app, &user).await;
    let other_token = workspace_token(&app, &other).await;
    let c = Uuid::new_v4();
    open(&app, &user, c, "Save a plan").await;
    let call_id = Uuid::new_v4();
    let call = json!({
        "call_id": call_id,
        "conversation_id": c,
        "method": "save_document",
        "params": {"filename": "plan.md", "content": "# Plan", "type": "markdown"},
    });

    let first = post_call(&app, &token, &call).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["result"]["filename"], "plan.md");
    let (a, b) = tokio::join!(
        post_call(&app, &token, &call),
        post_call(&app, &token, &call)
    );
    assert_eq!(a.body, first.body);
    assert_eq!(b.body, first.body);
    assert_eq!(document_count(&app.db, user.id).await, 1);
    let id = first.body["result"]["id"].as_str().expect("id").to_string();
    let r = app.get(&format!("/api/documents/{id}"), &user.access).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["content"], "# Plan");

    // Another user's sandbox reusing the call id saves its own document.
    let theirs = post_call(&app, &other_token, &call).await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);
    assert_ne!(theirs.body["result"]["id"], first.body["result"]["id"]);
    assert_eq!(document_count(&app.db, other.id).await, 1);

    // A new call id is a new document; the other tools answer through the route.
    let mut second = call.clone();
    second["call_id"] = json!(Uuid::new_v4());
    let r = post_call(&app, &token, &second).await;
    assert_ne!(r.body["result"]["id"], first.body["result"]["id"]);
    assert_eq!(document_count(&app.db, user.id).await, 2);
    let r = post_call(
        &app,
        &token,
        &json!({"call_id": Uuid::new_v4(), "method": "read_document", "params": {"id": id}}),
    )
    .await;
    assert_eq!(r.body["result"]["content"], "# Plan", "{}", r.body);

    // Tool-level refusals are answers, not HTTP errors.
    let r = post_call(
        &app,
        &token,
        &json!({"call_id": Uuid::new_v4(), "method": "read_document", "params": {"id": Uuid::new_v4()}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "not_found");

    // Malformed calls: 400, nothing saved.
    for bad in [
        json!({"call_id": "not-a-uuid", "method": "save_document",
               "params": {"filename": "x.md", "content": "x", "type": "markdown"}}),
        json!({"call_id": Uuid::new_v4(), "method": "no_such_method", "params": {}}),
        json!({"method": "list_documents", "params": {}}),
    ] {
        let r = post_call(&app, &token, &bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
    assert_eq!(document_count(&app.db, user.id).await, 2);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_retried_save_is_answered_even_when_the_first_filled_the_storage(db: PgPool) {
    let app = TestApp::with_config(db, |c| {
        c.plans = Some(r#"{"free": {"storage_bytes": 3000}}"#.into());
    })
    .await;
    let user = app.register("a@example.com").await;
    let token = workspace_token(&app, &user).await;
    let save = |call_id: Uuid| {
        json!({
            "call_id": call_id,
            "method": "save_document",
            "params": {"filename": "big.md", "content": "x".repeat(2000), "type": "markdown"},
        })
    };
    let call_id = Uuid::new_v4();
    let first = post_call(&app, &token, &save(call_id)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(first.body["result"]["id"].is_string(), "{}", first.body);
    // The answer was lost; the retry gets it, though a second copy would not fit.
    let retry = post_call(&app, &token, &save(call_id)).await;
    assert_eq!(retry.body, first.body);
    let another = post_call(&app, &token, &save(Uuid::new_v4())).await;
    assert_eq!(another.status, StatusCode::OK, "{}", another.body);
    assert_eq!(
        another.body["error"]["code"], "quota_exceeded",
        "{}",
        another.body
    );
    assert_eq!(document_count(&app.db, user.id).await, 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_stored_conversation_says_where_its_events_end_and_whether_its_turn_runs(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("a@example.com").await;
    let token = workspace_token(&app, &user).await;
    let c = Uuid::new_v4();
    let message = open(&app, &user, c, "Count").await;
    let mut f = Frames::new(c);
    let (t, one) = (f.turn_of(Some(message)), f.text("[001] "));
    let r = post_events(&app, &token, &report(c, Some(message), &[t, one], 0)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let uri = format!("/api/conversations/{c}");

    // Midway: the page shows what is stored and resumes after `last_seq`.
    let r = app.get(&uri, &user.access).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["last_seq"], 2);
    assert_eq!(r.body["running"], true);
    assert_eq!(r.body["messages"][1]["content"], "[001] ");
    assert_eq!(r.body["messages"][1]["complete"], false);

    // Nothing stored for long and no turn running on this router: cut off.
    let mut tx = app.db.begin().await.expect("tx");
    sqlx::query("set local session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("no triggers");
    sqlx::query("update messages set updated_at = now() - interval '10 minutes' where id = $1")
        .bind(message)
        .execute(&mut *tx)
        .await
        .expect("aged");
    tx.commit().await.expect("commit");
    let r = app.get(&uri, &user.access).await;
    assert_eq!(r.body["running"], false, "{}", r.body);

    // Ended: not running, and `last_seq` counts the end.
    let r = post_events(&app, &token, &report(c, Some(message), &[f.done(1, 1)], 0)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app.get(&uri, &user.access).await;
    assert_eq!(r.body["last_seq"], 3);
    assert_eq!(r.body["running"], false);
    assert_eq!(r.body["messages"][1]["complete"], true);

    // Another user's conversation stays not found.
    let other = app.register("b@example.com").await;
    assert_eq!(
        app.get(&uri, &other.access).await.status,
        StatusCode::NOT_FOUND
    );
}
