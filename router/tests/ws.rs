//! The browser WebSocket end to end: a real router, real local sandboxes under
//! bubblewrap running the real CLI, the fake model upstream.

mod common;

use std::time::Duration;

use common::live::{Live, WAIT, of_type, text, wait_for};
use router::proxy::Status;
use sandbox::testing::Reply;
use serde_json::{Value, json};
use sqlx::PgPool;

fn status(frame: &Value) -> Option<&str> {
    (frame["type"] == "status").then(|| frame["state"].as_str().unwrap_or(""))
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_connection_shows_waking_then_ready_and_a_turn_streams(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::text(&["Hello ", "Alice"]));
    let mut browser = live.browser(&alice.access).await;

    browser.woke().await;
    browser.message("hi", None).await;
    let frames = browser.turn().await;
    assert_eq!(frames[0]["type"], "turn", "{frames:?}");
    assert!(frames[0]["conversation_id"].is_string());
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("done"))
    );
    assert_eq!(text(&frames), "Hello Alice");
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_foreign_origin_and_bad_tokens_are_refused(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let refused = |r: Result<common::live::Browser, tokio_tungstenite::tungstenite::Error>| match r
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    };
    assert_eq!(
        refused(
            live.browser_with(&alice.access, Some("https://evil.example"))
                .await
        ),
        403
    );
    assert_eq!(refused(live.browser_with("not-a-token", None).await), 401);
    assert_eq!(refused(live.browser_with("", None).await), 401);
    assert_eq!(live.api.requests().len(), 0);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_frame_over_one_mebibyte_gets_an_error_and_changes_nothing(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser.message(&"x".repeat(1024 * 1024 + 1), None).await;
    let error = browser.until(|f| f["type"] == "error").await;
    assert_eq!(
        error.last().map(|f| f["code"].clone()),
        Some(json!("frame_too_large"))
    );
    browser.send(json!({"type": "nonsense"})).await;
    let error = browser.until(|f| f["type"] == "error").await;
    assert_eq!(
        error.last().map(|f| f["code"].clone()),
        Some(json!("bad_frame"))
    );
    // Still usable.
    live.api.push(Reply::text(&["fine"]));
    browser.message("hello", None).await;
    assert_eq!(text(&browser.turn().await), "fine");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn two_users_chat_at_once_and_each_sees_only_their_own_stream(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    let mut a = live.browser(&alice.access).await;
    let mut a2 = live.browser(&alice.access).await;
    let mut b = live.browser(&bob.access).await;
    a.ready().await;
    a2.ready().await;
    b.ready().await;
    // The fake answers in request order; each answer names itself.
    live.api.push(Reply::text(&["answer ", "one"]));
    live.api.push(Reply::text(&["answer ", "two"]));
    a.message("alice asks", None).await;
    b.message("bob asks", None).await;
    let (fa, fb) = tokio::join!(a.turn(), b.turn());
    let fa2 = a2.turn().await;
    let (ta, tb) = (text(&fa), text(&fb));
    assert!(
        ta.starts_with("answer ") && tb.starts_with("answer ") && ta != tb,
        "{ta} / {tb}"
    );
    assert_eq!(text(&fa2), ta, "the second tab sees the same stream");
    let conv = |f: &[Value]| f[0]["conversation_id"].clone();
    assert_ne!(conv(&fa), conv(&fb));
    assert!(fb.iter().all(|f| f["conversation_id"] == conv(&fb)));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_agent_cannot_see_another_workspace_the_environment_or_the_database(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    // Bob's workspace exists with a secret in it.
    let mut b = live.browser(&bob.access).await;
    b.ready().await;
    let bob_dir = live.workspace(&bob);
    std::fs::write(bob_dir.join("secret.txt"), "bob-secret-42").expect("write");

    let command = format!(
        "cat {dir}/secret.txt; ls {dir}; ls /; env; \
         curl -s -m 3 http://127.0.0.1:5432/ || echo CURL_FAILED; \
         python3 -c \"import socket; s=socket.socket(); s.settimeout(3); print('DB', s.connect_ex(('127.0.0.1', 5432)))\"",
        dir = bob_dir.display()
    );
    live.api.push(Reply::tool_use(
        "toolu_snoop",
        "Bash",
        json!({"command": command, "description": "look around"}),
    ));
    live.api.push(Reply::text(&["nothing found"]));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("look around", None).await;
    let frames = a.turn().await;
    let results = of_type(&frames, "tool_result");
    let output = results
        .first()
        .and_then(|r| r["content"].as_str())
        .unwrap_or_else(|| panic!("no tool result: {frames:?}"));
    assert!(!output.contains("bob-secret-42"), "{output}");
    assert!(output.contains("No such file"), "{output}");
    for secret in [
        "sk-ant-test-key",
        "DATABASE_URL",
        "postgres://",
        "JARVIS_JWT",
    ] {
        assert!(!output.contains(secret), "{secret} leaked: {output}");
    }
    assert!(output.contains("CURL_FAILED"), "{output}");
    assert!(
        !output.contains("DB 0"),
        "the database port answered: {output}"
    );
    assert!(output.contains("DB "), "{output}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_workspace_sleeps_when_idle_and_wakes_with_its_files(db: PgPool) {
    let live = Live::with_config(db, |c| c.idle_timeout = Duration::from_secs(1)).await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::tool_use(
        "toolu_w",
        "Write",
        json!({"file_path": "/workspace/notes.txt", "content": "kept across sleep"}),
    ));
    live.api.push(Reply::text(&["written"]));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("write notes", None).await;
    let frames = a.turn().await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("done")),
        "{frames:?}"
    );
    drop(a);

    let hub = live.app.state.workspaces.hub(alice.id);
    wait_for(|| hub.status() == Status::Asleep).await;
    let token_hash: Option<Vec<u8>> =
        sqlx::query_scalar("select token_hash from workspaces where owner_id = $1")
            .bind(alice.id)
            .fetch_one(&live.app.db)
            .await
            .expect("workspace row");
    assert!(token_hash.is_none(), "the token is revoked on sleep");

    live.api.push(Reply::tool_use(
        "toolu_r",
        "Bash",
        json!({"command": "cat /workspace/notes.txt", "description": "read"}),
    ));
    live.api.push(Reply::text(&["read"]));
    let mut a = live.browser(&alice.access).await;
    let woke = a.ready().await;
    assert_eq!(status(&woke[0]), Some("waking"));
    a.message("read notes", None).await;
    let frames = a.turn().await;
    let output = of_type(&frames, "tool_result")
        .first()
        .and_then(|r| r["content"].as_str())
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(output.contains("kept across sleep"), "{frames:?}");
}

/// Kills `user`'s jail (the outer bubblewrap process) the way a crash would.
fn kill_sandbox_of(user: uuid::Uuid) {
    let needle = format!("{user}/workspace");
    let pid = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("bwrap") && cmdline.contains(&needle)
        })
        .expect("the user's sandbox process");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn killing_the_sandbox_mid_turn_gives_an_error_and_the_next_message_works(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::Stall(Duration::from_secs(600)));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("take your time", None).await;
    let started = a.until(|f| f["type"] == "turn").await;
    let conversation = started
        .last()
        .map(|f| f["conversation_id"].clone())
        .expect("turn");
    // Mid-turn: the agent's model call is in flight (and stalls).
    wait_for(|| !live.api.message_requests().is_empty()).await;
    kill_sandbox_of(alice.id);
    let end = a.until(|f| f["type"] == "error").await;
    let error = end.last().expect("error");
    assert_eq!(error["code"], "agent_crashed", "{end:?}");
    assert_eq!(error["conversation_id"], conversation);

    live.api.push(Reply::text(&["back again"]));
    a.message("are you there?", conversation.as_str()).await;
    let frames = a
        .until(|f| f["type"] == "done" || (f["type"] == "error"))
        .await;
    assert!(
        of_type(&frames, "status").len() >= 2,
        "re-wake is shown: {frames:?}"
    );
    assert_eq!(text(&frames), "back again", "{frames:?}");
    let _ = WAIT;
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn documents_files_and_the_conversation_are_stored_under_their_owner_only(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    live.api.push(Reply::tool_use(
        "toolu_doc",
        "mcp__jarvis__save_document",
        json!({"filename": "plan.md", "content": "# Plan\nship it", "type": "markdown"}),
    ));
    live.api.push(Reply::tool_use(
        "toolu_file",
        "Write",
        json!({"file_path": "/workspace/out/report.txt", "content": "quarterly numbers"}),
    ));
    live.api.push(Reply::text(&["All ", "saved."]));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("write a plan and a report", None).await;
    let frames = a.turn().await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("done")),
        "{frames:?}"
    );
    let document = of_type(&frames, "document");
    assert_eq!(document.len(), 1, "{frames:?}");
    assert_eq!(document[0]["filename"], "plan.md");
    let conversation = frames[0]["conversation_id"]
        .as_str()
        .expect("id")
        .to_string();

    // The document: Alice's, not Bob's.
    let docs = live.app.get("/api/documents", &alice.access).await;
    let list = docs.body["documents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(list.len(), 1, "{:?}", docs.body);
    assert_eq!(list[0]["filename"], "plan.md");
    let doc_id = list[0]["id"].as_str().expect("doc id").to_string();
    assert_eq!(
        live.app.get("/api/documents", &bob.access).await.body["documents"],
        json!([])
    );
    let doc_uri = format!("/api/documents/{doc_id}");
    assert_eq!(live.app.get(&doc_uri, &bob.access).await.status, 404);

    // The workspace file: a `files` row and an object, once the turn's sync ran.
    let files = tokio::time::timeout(WAIT, async {
        loop {
            let files = live.app.get("/api/files", &alice.access).await.body["files"].clone();
            if files
                .as_array()
                .is_some_and(|l| l.iter().any(|f| f["path"] == "out/report.txt"))
            {
                return files;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the written file is stored in time");
    let file = files
        .as_array()
        .and_then(|l| l.iter().find(|f| f["path"] == "out/report.txt"))
        .cloned()
        .expect("file row");
    assert_eq!(file["kind"], "workspace", "{file}");
    let download = format!(
        "/api/files/{}/download",
        file["id"].as_str().expect("file id")
    );
    let got = live.app.get(&download, &alice.access).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes, b"quarterly numbers");
    assert_eq!(live.app.get(&download, &bob.access).await.status, 404);
    assert_eq!(
        live.app.get("/api/files", &bob.access).await.body["files"],
        json!([])
    );

    // The conversation, stored as it streamed and complete.
    let uri = format!("/api/conversations/{conversation}");
    let stored = live.app.get(&uri, &alice.access).await;
    assert_eq!(stored.status, 200, "{:?}", stored.body);
    let messages = stored.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(messages.len(), 2, "{:?}", stored.body);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "write a plan and a report");
    assert_eq!(messages[1]["role"], "assistant");
    assert!(
        messages[1]["content"]
            .as_str()
            .unwrap_or("")
            .contains("All saved."),
        "{messages:?}"
    );
    assert_eq!(messages[1]["complete"], true);
    assert_eq!(live.app.get(&uri, &bob.access).await.status, 404);

    // The gateway metered the turn for Alice, per turn.
    let (calls, with_turn): (i64, i64) =
        sqlx::query_as("select count(*), count(turn_id) from usage where owner_id = $1")
            .bind(alice.id)
            .fetch_one(&live.app.db)
            .await
            .expect("usage");
    assert!(calls >= 3, "one row per model call: {calls}");
    assert_eq!(calls, with_turn, "every call names its turn");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_wiped_machine_gets_files_and_the_agent_session_back_from_storage(db: PgPool) {
    let live = Live::with_config(db, |c| c.idle_timeout = Duration::from_secs(1)).await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::tool_use(
        "toolu_w",
        "Write",
        json!({"file_path": "/workspace/notes.txt", "content": "remember the milk"}),
    ));
    live.api.push(Reply::text(&["noted"]));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("take a note about milk", None).await;
    let frames = a.turn().await;
    let conversation = frames[0]["conversation_id"]
        .as_str()
        .expect("id")
        .to_string();
    drop(a);
    let hub = live.app.state.workspaces.hub(alice.id);
    wait_for(|| hub.status() == Status::Asleep).await;

    // The disk is lost: only storage and the database remain.
    let home = live.workspace(&alice);
    let home = home.parent().expect("user dir");
    std::fs::remove_dir_all(home).expect("wipe");

    live.api.push(Reply::tool_use(
        "toolu_r",
        "Bash",
        json!({"command": "cat /workspace/notes.txt; echo appended >> /workspace/notes.txt && echo APPENDED", "description": "read"}),
    ));
    live.api.push(Reply::text(&["it says milk"]));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("what did I note?", Some(&conversation)).await;
    let frames = a.turn().await;
    let output = of_type(&frames, "tool_result")
        .first()
        .and_then(|r| r["content"].as_str())
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(output.contains("remember the milk"), "{frames:?}");
    assert!(
        !output.contains("Permission denied"),
        "restored files are the sandbox's: {output}"
    );
    assert!(
        output.contains("APPENDED"),
        "a restored file is writable: {output}"
    );
    // The agent's session came back: the model saw the earlier exchange.
    let last = live.api.message_requests();
    let prompt = last
        .iter()
        .rev()
        .find(|r| r.body.to_string().contains("what did I note?"))
        .map(|r| r.body.to_string())
        .expect("the second turn's request");
    assert!(prompt.contains("take a note about milk"), "{prompt}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn without_a_model_key_a_turn_ends_with_an_error_naming_it(db: PgPool) {
    let live = Live::with_config(db, |c| c.anthropic_api_key = None).await;
    let alice = live.app.register("alice@example.com").await;
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser.message("hello?", None).await;
    let frames = browser.turn().await;
    let end = frames.last().expect("the turn ends");
    assert_eq!(end["type"], "error", "{frames:?}");
    let message = end["message"].as_str().unwrap_or_default();
    assert!(message.contains("ANTHROPIC_API_KEY"), "{message}");
    assert_eq!(text(&frames), "", "no answer text: {frames:?}");
    assert!(live.api.requests().is_empty(), "the model was never called");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_exhausted_quota_and_the_rate_limit_reach_the_browser(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;

    // The free plan's monthly tokens are used up.
    sqlx::query(
        "insert into usage (owner_id, model, input_tokens, output_tokens) values ($1, 'claude-sonnet-4-5', 900000, 100000)",
    )
    .bind(alice.id)
    .execute(&live.app.db)
    .await
    .expect("usage row");
    a.message("one more please", None).await;
    let frames = a.turn().await;
    let error = frames.last().expect("end");
    assert_eq!(error["type"], "error", "{frames:?}");
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("monthly token quota"),
        "{error}"
    );
    sqlx::query("delete from usage where owner_id = $1")
        .bind(alice.id)
        .execute(&live.app.db)
        .await
        .expect("reset");

    // Twenty requests this minute already (in-process limiter, shared by the gateway).
    use time::OffsetDateTime;
    if OffsetDateTime::now_utc().second() > 40 {
        tokio::time::sleep(Duration::from_secs(u64::from(
            61 - OffsetDateTime::now_utc().second(),
        )))
        .await;
    }
    for _ in 0..20 {
        let _ = live
            .app
            .state
            .gateway
            .limiter
            .hit(alice.id, router::plans::Tier::Free)
            .await;
    }
    a.message("and again", None).await;
    let frames = a.turn().await;
    let error = frames.last().expect("end");
    assert_eq!(error["code"], "rate_limited", "{frames:?}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("requests per minute"),
        "{error}"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_plan_caps_turns_running_at_once(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::Stall(Duration::from_secs(3)));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("a long one", None).await;
    let first = a.until(|f| f["type"] == "turn").await;
    let running = first
        .last()
        .map(|f| f["conversation_id"].clone())
        .expect("turn");

    // The free plan runs one answer at a time: another conversation must wait.
    a.message("meanwhile, another", None).await;
    let refused = a
        .until(|f| f["type"] == "error" && f["code"] == "too_many_turns")
        .await;
    let error = refused.last().expect("error");
    assert!(
        error["conversation_id"].is_string() && error["conversation_id"] != running,
        "the refusal names the refused message's conversation: {error}"
    );
    // The refused message is taken back: its new conversation is not kept.
    let refused_id: uuid::Uuid = error["conversation_id"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .expect("a conversation id");
    let db = live.app.db.clone();
    let kept = move || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from conversations where id = $1")
                .bind(refused_id)
                .fetch_one(&db)
                .await
                .expect("count")
        }
    };
    tokio::time::timeout(WAIT, async {
        while kept().await != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the refused turn's rows are deleted");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("free plan"),
        "{error}"
    );

    // Once the first ends, the next is accepted.
    let done = a.until(|f| f["type"] == "done").await;
    assert_eq!(
        done.last().map(|f| f["conversation_id"].clone()),
        Some(running)
    );
    live.api.push(Reply::text(&["now it works"]));
    a.message("and now?", None).await;
    assert_eq!(text(&a.turn().await), "now it works");
}

/// The conversation as the browser reloads it: (role, content) of each message.
async fn reloaded(live: &Live, token: &str, conversation: &str) -> Vec<(String, String)> {
    let response = live
        .app
        .get(&format!("/api/conversations/{conversation}"), token)
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    response.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_string(),
                m["content"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect()
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn regenerate_and_edit_replace_turns_for_the_agent_and_the_history(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    let conversation = uuid::Uuid::new_v4().to_string();
    let mut prompts = Vec::new();
    for (question, answer) in [
        ("alpha-question", "alpha-answer"),
        ("bravo-question", "bravo-answer"),
    ] {
        live.api.push(Reply::text(&[answer]));
        browser.message(question, Some(&conversation)).await;
        let frames = browser.turn().await;
        assert_eq!(text(&frames), answer, "{frames:?}");
        let prompt = frames[0]["prompt_id"]
            .as_str()
            .expect("the turn names its prompt");
        prompts.push(prompt.to_string());
    }
    let history = reloaded(&live, &alice.access, &conversation).await;
    assert_eq!(
        history,
        pairs(&[
            ("user", "alpha-question"),
            ("assistant", "alpha-answer"),
            ("user", "bravo-question"),
            ("assistant", "bravo-answer"),
        ])
    );

    // Regenerate the last answer: the same question in its own place.
    live.api.push(Reply::text(&["bravo-again"]));
    browser
        .send(json!({"type": "message", "conversation_id": conversation,
                     "content": "bravo-question", "replaces": prompts[1]}))
        .await;
    let frames = browser.turn().await;
    assert_eq!(text(&frames), "bravo-again", "{frames:?}");
    let seen = live.api.message_requests().last().expect("request").body["messages"].to_string();
    assert!(
        !seen.contains("bravo-answer"),
        "the agent still remembers: {seen}"
    );
    assert!(seen.contains("alpha-answer"), "{seen}");
    assert_eq!(
        reloaded(&live, &alice.access, &conversation).await,
        pairs(&[
            ("user", "alpha-question"),
            ("assistant", "alpha-answer"),
            ("user", "bravo-question"),
            ("assistant", "bravo-again"),
        ])
    );

    // Edit the first message: everything after it goes.
    live.api.push(Reply::text(&["edited-answer"]));
    browser
        .send(json!({"type": "message", "conversation_id": conversation,
                     "content": "alpha-edited", "replaces": prompts[0]}))
        .await;
    let frames = browser.turn().await;
    assert_eq!(text(&frames), "edited-answer", "{frames:?}");
    let seen = live.api.message_requests().last().expect("request").body["messages"].to_string();
    for forgotten in ["alpha-question", "alpha-answer", "bravo"] {
        assert!(!seen.contains(forgotten), "{forgotten} still seen: {seen}");
    }
    assert_eq!(
        reloaded(&live, &alice.access, &conversation).await,
        pairs(&[("user", "alpha-edited"), ("assistant", "edited-answer")])
    );

    // A replaced message (or a made-up id) cannot be replaced: a clear refusal
    // naming the conversation, and nothing changes.
    let requests = live.api.message_requests().len();
    for replaced in [
        prompts[1].clone(),
        uuid::Uuid::new_v4().to_string(),
        "nope".into(),
    ] {
        browser
            .send(json!({"type": "message", "conversation_id": conversation,
                         "content": "again", "replaces": replaced}))
            .await;
        let refusal = browser.until(|f| f["type"] == "error").await;
        let refusal = refusal.last().expect("error");
        assert_eq!(refusal["code"], "cannot_replace", "{refusal}");
        assert_eq!(
            refusal["conversation_id"],
            conversation.as_str(),
            "{refusal}"
        );
    }
    assert_eq!(live.api.message_requests().len(), requests);
    assert_eq!(
        reloaded(&live, &alice.access, &conversation).await,
        pairs(&[("user", "alpha-edited"), ("assistant", "edited-answer")])
    );
}

/// The buckets (in order, `+Inf` last) and the count of histogram `name` with
/// `labels` (`op="open_turn"`, or none) in a Prometheus text exposition.
fn histogram(text: &str, name: &str, labels: &str) -> (Vec<f64>, f64) {
    // `le` may come first or last among the labels.
    let bucket = format!("{name}_bucket{{");
    let count = match labels {
        "" => format!("{name}_count "),
        l => format!("{name}_count{{{l}}} "),
    };
    let value = |l: &str| -> f64 {
        l.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number")
    };
    let buckets = text
        .lines()
        .filter(|l| l.starts_with(&bucket) && l.contains(labels))
        .map(value)
        .collect();
    let count = text
        .lines()
        .find(|l| l.starts_with(&count))
        .map_or(0.0, value);
    (buckets, count)
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_turn_shows_where_the_routers_time_goes_on_metrics(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::text(&["Hello ", "Alice"]));
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser.message("hi", None).await;
    let frames = browser.turn().await;
    assert_eq!(text(&frames), "Hello Alice");

    let wanted = [
        (
            "jarvis_turn_router_first_text_seconds",
            r#"leg="to_sandbox""#,
        ),
        (
            "jarvis_turn_router_first_text_seconds",
            r#"leg="to_browser""#,
        ),
        ("jarvis_turn_db_seconds", r#"op="open_turn""#),
        // The sandbox pushes the turn's events over HTTP, maybe after `done`.
        ("jarvis_turn_db_seconds", r#"op="store_events""#),
        ("jarvis_db_pool_wait_seconds", ""),
        ("jarvis_browser_queue_wait_seconds", ""),
        ("jarvis_ws_frame_queue_wait_seconds", ""),
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = live.app.metrics().await;
        let exposition = reply.body.as_str().expect("metrics text").to_string();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(name, labels)| histogram(&exposition, name, labels).1 == 0.0)
            .collect();
        if missing.is_empty() {
            for (name, labels) in wanted {
                let (buckets, count) = histogram(&exposition, name, labels);
                assert!(buckets.len() > 1, "{name}{{{labels}}} has buckets");
                assert!(
                    buckets.windows(2).all(|w| w[0] <= w[1]),
                    "{name}{{{labels}}} buckets are cumulative: {buckets:?}"
                );
                assert_eq!(
                    buckets.last(),
                    Some(&count),
                    "{name}{{{labels}}}: +Inf holds all"
                );
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not on /metrics after a turn: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_workspace_put_to_sleep_mid_turn_tells_the_browser(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::Stall(Duration::from_secs(600)));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("take your time", None).await;
    let turn = a.until(|f| f["type"] == "turn").await;
    let conversation = turn.last().map(|f| f["conversation_id"].clone());

    // The router's shutdown puts every workspace to sleep, turns or not.
    live.app.state.workspaces.sleep_all().await;
    let frames = a.until(|f| f["type"] == "error").await;
    let error = frames.last().expect("the error");
    assert_eq!(error["code"], "agent_crashed", "{error}");
    assert_eq!(Some(error["conversation_id"].clone()), conversation);
}
