//! Turns against the real CLI: streaming text, real file and code tools, Jarvis
//! tools through the router, and an environment without secrets.

mod common;

use common::*;
use sandbox::testing::{CallAnswer, Reply};
use serde_json::json;

#[tokio::test]
async fn text_streams_as_numbered_deltas() {
    let world = World::new().await;
    world.api.push(Reply::text(&["Hel", "lo, ", "wor", "ld!"]));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    let frames = router.turn(&id, "say hello").await;

    assert_eq!(frames[0]["type"], "turn", "{frames:?}");
    assert_eq!(frames[0]["conversation_id"], id.as_str());
    assert!(of_type(&frames, "text").len() >= 4, "{frames:?}");
    assert_eq!(text(&frames), "Hello, world!");
    let done = frames.last().expect("done");
    assert_eq!(done["type"], "done", "{frames:?}");
    assert_eq!(done["usage"]["output_tokens"], 5);
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    assert_eq!(seqs.len(), frames.len());

    let requests = world.api.message_requests();
    assert_eq!(requests[0].api_key.as_deref(), Some(TOKEN));
    let tools: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for expected in [
        "Read",
        "Write",
        "Edit",
        "Bash",
        "Glob",
        "Grep",
        "mcp__jarvis__save_document",
        "mcp__jarvis__speak",
    ] {
        assert!(
            tools.contains(&expected),
            "{expected} missing from {tools:?}"
        );
    }
    for refused in [
        "Agent",
        "WebFetch",
        "WebSearch",
        "ScheduleWakeup",
        "ToolSearch",
        "Skill",
        "Workflow",
    ] {
        assert!(!tools.contains(&refused), "{refused} offered: {tools:?}");
    }
}

#[tokio::test]
async fn write_then_bash_runs_real_code() {
    let world = World::new().await;
    let script = world.workspace().join("hello.py");
    world.api.push(Reply::tool_use(
        "toolu_w",
        "Write",
        json!({"file_path": script, "content": "print('hello from python', 6 * 7)\n"}),
    ));
    world.api.push(Reply::tool_use(
        "toolu_b",
        "Bash",
        json!({"command": "python3 hello.py", "description": "run it"}),
    ));
    world.api.push(Reply::text(&["It printed the answer."]));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let frames = router.turn(&conversation(), "write and run hello.py").await;

    let uses = of_type(&frames, "tool_use");
    assert_eq!(uses.len(), 2, "{frames:?}");
    assert_eq!(
        (uses[0]["name"].as_str(), uses[1]["name"].as_str()),
        (Some("Write"), Some("Bash"))
    );
    let results = of_type(&frames, "tool_result");
    assert_eq!(results.len(), 2, "{frames:?}");
    assert_eq!(results[1]["id"], "toolu_b");
    assert_eq!(results[1]["is_error"], false, "{frames:?}");
    assert!(
        results[1]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("hello from python 42"),
        "{frames:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&script).expect("file written"),
        "print('hello from python', 6 * 7)\n"
    );
    assert_eq!(frames.last().expect("end")["type"], "done");
}

#[tokio::test]
async fn save_document_goes_through_the_router_and_emits_a_document() {
    let world = World::new().await;
    world.api.push(Reply::tool_use(
        "toolu_s",
        "mcp__jarvis__save_document",
        json!({"filename": "plan.md", "content": "# Plan", "type": "markdown"}),
    ));
    world.api.push(Reply::text(&["Saved."]));
    world
        .api
        .answer_calls(|_| CallAnswer::result(json!({"id": "doc-7", "filename": "plan.md"})));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    let frames = router.turn(&id, "save a plan").await;

    assert!(
        of_type(&frames, "call").is_empty(),
        "calls go over HTTP: {frames:?}"
    );
    let calls = world.api.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["method"], "save_document");
    assert_eq!(calls[0]["conversation_id"], id.as_str());
    assert!(calls[0]["call_id"].is_string());
    assert_eq!(
        calls[0]["params"],
        json!({"filename": "plan.md", "content": "# Plan", "type": "markdown"})
    );
    assert!(calls[0].get("user_id").is_none() && calls[0]["params"].get("user_id").is_none());
    let documents = of_type(&frames, "document");
    assert_eq!(documents.len(), 1, "{frames:?}");
    assert_eq!(
        (
            documents[0]["id"].as_str(),
            documents[0]["filename"].as_str()
        ),
        (Some("doc-7"), Some("plan.md"))
    );
    let result = of_type(&frames, "tool_result");
    assert!(
        result[0]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("doc-7"),
        "{frames:?}"
    );
    assert_eq!(frames.last().expect("end")["type"], "done");
}

#[tokio::test]
async fn a_tool_call_is_retried_with_the_same_call_id_after_a_server_error() {
    let world = World::new().await;
    world.api.push(Reply::tool_use(
        "toolu_l",
        "mcp__jarvis__list_documents",
        json!({}),
    ));
    world.api.push(Reply::text(&["Listed."]));
    let failures = std::sync::atomic::AtomicUsize::new(0);
    world.api.answer_calls(move |_| {
        if failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            CallAnswer::status(503)
        } else {
            CallAnswer::result(json!([{"id": "doc-1", "filename": "a.md"}]))
        }
    });
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let frames = router.turn(&conversation(), "list my documents").await;

    let calls = world.api.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls.iter().all(|c| c["call_id"] == calls[0]["call_id"]),
        "{calls:?}"
    );
    let results = of_type(&frames, "tool_result");
    assert_eq!(results[0]["is_error"], false, "{frames:?}");
    assert!(
        results[0]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("doc-1"),
        "{frames:?}"
    );
}

#[tokio::test]
async fn the_cli_environment_holds_no_secret() {
    let world = World::new().await;
    world.api.push(Reply::tool_use(
        "toolu_e",
        "Bash",
        json!({"command": "env", "description": "print env"}),
    ));
    world.api.push(Reply::text(&["That is my environment."]));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let frames = router.turn(&conversation(), "print your environment").await;

    let results = of_type(&frames, "tool_result");
    let env = results
        .first()
        .and_then(|r| r["content"].as_str())
        .expect("env output");
    assert!(env.contains(&format!("ANTHROPIC_API_KEY={TOKEN}")), "{env}");
    assert!(
        env.contains(&format!("ANTHROPIC_BASE_URL={}", world.api.url())),
        "{env}"
    );
    for secret in [
        "db-secret-password",
        "sk-ant-real-secret-key",
        "sk_live_stripe_secret",
        "aws-secret-access-key",
    ] {
        assert!(!env.contains(secret), "{secret} leaked:\n{env}");
    }
    for name in [
        "DATABASE_URL",
        "STRIPE_SECRET_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "RUST_LOG",
        "JARVIS_",
    ] {
        assert!(!env.contains(name), "{name} leaked:\n{env}");
    }
    assert!(
        world
            .api
            .message_requests()
            .iter()
            .all(|r| r.api_key.as_deref() == Some(TOKEN))
    );
}

#[tokio::test]
async fn the_cli_can_run_as_the_unprivileged_sandbox_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: dropping to another uid needs root; nothing to check");
        return;
    }
    let id = |flag: &str| -> u32 {
        let out = std::process::Command::new("id")
            .args([flag, "jarvis-sandbox"])
            .output()
            .expect("id");
        assert!(
            out.status.success(),
            "user jarvis-sandbox is missing: run scripts/install-claude.sh as root"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let world = World::new().await;
    std::fs::set_permissions(
        world.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    world.api.push(Reply::tool_use(
        "toolu_id",
        "Bash",
        json!({"command": "id -u && touch made-by-agent", "description": "who am i"}),
    ));
    world.api.push(Reply::text(&["done"]));
    let sandbox = world
        .sandbox(&["--cli-uid", &uid.to_string(), "--cli-gid", &gid.to_string()])
        .await;
    let mut router = sandbox.connect().await;
    let frames = router.turn(&conversation(), "who are you").await;

    let results = of_type(&frames, "tool_result");
    let output = results
        .first()
        .and_then(|r| r["content"].as_str())
        .unwrap_or_default();
    assert_eq!(
        output.lines().next(),
        Some(uid.to_string().as_str()),
        "{frames:?}"
    );
    let made = std::fs::metadata(world.workspace().join("made-by-agent")).expect("file made");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), uid);
    assert_eq!(frames.last().expect("end")["type"], "done");
}

#[tokio::test]
async fn speak_update_and_failed_calls_reach_the_agent() {
    let world = World::new().await;
    world.api.push(Reply::tool_use(
        "toolu_sp",
        "mcp__jarvis__speak",
        json!({"text": "Good morning"}),
    ));
    world.api.push(Reply::tool_use(
        "toolu_up",
        "mcp__jarvis__update_document",
        json!({"id": "doc-1", "content": "v2"}),
    ));
    world.api.push(Reply::tool_use(
        "toolu_rd",
        "mcp__jarvis__read_document",
        json!({"id": "doc-404"}),
    ));
    world.api.push(Reply::text(&["All done."]));
    world
        .api
        .answer_calls(|call| match call["method"].as_str() {
            Some("speak") => CallAnswer::result(json!({"url": "/api/audio/a1.wav"})),
            Some("update_document") => {
                CallAnswer::result(json!({"id": "doc-1", "filename": "notes.md"}))
            }
            _ => CallAnswer::error("not_found", "no such document"),
        });
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    let frames = router.turn(&id, "speak, update, read").await;
    let calls = world.api.calls();

    let methods: Vec<&str> = calls.iter().filter_map(|c| c["method"].as_str()).collect();
    assert_eq!(methods, ["speak", "update_document", "read_document"]);
    assert_eq!(calls[0]["params"], json!({"text": "Good morning"}));
    let voice = of_type(&frames, "voice");
    assert_eq!(voice.len(), 1, "{frames:?}");
    assert_eq!(
        (voice[0]["url"].as_str(), voice[0]["transcript"].as_str()),
        (Some("/api/audio/a1.wav"), Some("Good morning"))
    );
    let documents = of_type(&frames, "document");
    assert_eq!(documents.len(), 1, "{frames:?}");
    assert_eq!(documents[0]["filename"], "notes.md");
    let results = of_type(&frames, "tool_result");
    let failed = results
        .iter()
        .find(|r| r["id"] == "toolu_rd")
        .expect("read result");
    assert_eq!(failed["is_error"], true, "{frames:?}");
    assert!(
        failed["content"]
            .as_str()
            .unwrap_or_default()
            .contains("not_found"),
        "{frames:?}"
    );
    assert_eq!(text(&frames), "All done.");
}

#[tokio::test]
async fn a_tool_call_needing_permission_is_denied_not_hung() {
    let world = World::new().await;
    let outside = world.tmp.path().join("outside.txt");
    world.api.push(Reply::tool_use(
        "toolu_o",
        "Write",
        json!({"file_path": outside, "content": "escaped"}),
    ));
    world.api.push(Reply::tool_use(
        "toolu_f",
        "WebFetch",
        json!({"url": "http://example.com", "prompt": "x"}),
    ));
    world.api.push(Reply::text(&["Could not."]));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let started = std::time::Instant::now();
    let frames = router.turn(&conversation(), "write outside").await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let results = of_type(&frames, "tool_result");
    assert_eq!(results.len(), 2, "{frames:?}");
    assert!(results.iter().all(|r| r["is_error"] == true), "{frames:?}");
    assert!(
        results[0]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("outside"),
        "{frames:?}"
    );
    assert!(!outside.exists(), "wrote outside the workspace");
    assert_eq!(frames.last().expect("end")["type"], "done");
}
