//! A store that refuses some writes, end to end (issue 18): the real router
//! binary with `JARVIS_STORAGE=s3://…` and only the documented `AWS_*`
//! variables (an `http://` endpoint, no `AWS_ALLOW_HTTP`), a real local
//! sandbox running the real CLI, and `s3s-fs` behind a gate that refuses one
//! key ([`s3_gate`]). The turn ends normally, the other file gets its row, the
//! refusal is counted on `/metrics`, and the idle reaper goes on putting the
//! workspace to sleep through refused writes.

mod common;
#[allow(dead_code)] // This binary uses a part of them.
#[path = "common/s3.rs"]
mod s3;
#[allow(dead_code)]
#[path = "common/s3_gate.rs"]
mod s3_gate;

use std::time::Duration;

use common::{
    live::WAIT,
    process::{
        data_dir, database_url, free_port, open, register, router_command, turn, until, wait_ready,
    },
};
use s3_gate::{Answer, Rule, S3Gate};
use sandbox::testing::{FakeApi, Reply};
use serde_json::json;
use sqlx::PgPool;

/// `jarvis_storage_write_failures_total{kind="bad_key"}` on the router at `url`.
async fn bad_key_refusals(url: &str) -> u64 {
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("metrics text");
    let prefix = "jarvis_storage_write_failures_total{kind=\"bad_key\"} ";
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until the router's count of refused writes passes `above`.
async fn refusals_past(url: &str, above: u64) -> u64 {
    tokio::time::timeout(WAIT, async {
        loop {
            let n = bad_key_refusals(url).await;
            if n > above {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no refused write past {above} in time"))
}

/// The router binary with its data under `dir`, storing through `gate` with
/// only the documented `AWS_*` variables (`router_command` clears the
/// environment: no AWS_ALLOW_HTTP), idle after 1 s; ready (the bucket answered
/// through the http:// endpoint).
async fn gated_router(
    db: &PgPool,
    gate: &S3Gate,
    dir: &std::path::Path,
    api: &FakeApi,
) -> (tokio::process::Child, String) {
    let port = free_port();
    let s3 = &gate.server.config;
    let mut command = router_command(&database_url(db).await, dir, &api.url(), port);
    command
        .env("JARVIS_STORAGE", format!("s3://{}", s3.bucket))
        .env("AWS_ENDPOINT_URL", gate.endpoint())
        .env("AWS_ACCESS_KEY_ID", &s3.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key)
        .env("AWS_REGION", &s3.region)
        .env("JARVIS_IDLE_TIMEOUT", "1s");
    let child = command.spawn().expect("the router binary starts");
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url).await;
    (child, url)
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_refused_object_neither_stops_the_turn_nor_the_sync_nor_the_reaper(db: PgPool) {
    let gate = S3Gate::start(vec![Rule::KeyContains(
        "refused".into(),
        Answer::InvalidKey,
    )])
    .await;
    let dir = data_dir();
    let api = FakeApi::start().await.expect("fake api");
    let (_child, url) = gated_router(&db, &gate, dir.path(), &api).await;
    let token = register(&url, "alice@example.com").await;

    api.push(Reply::tool_use(
        "toolu_write",
        "Bash",
        json!({
            "command": "printf 'kept\\n' > /workspace/kept.txt; printf 'no\\n' > /workspace/refused.txt; echo WROTE",
            "description": "write two files"
        }),
    ));
    api.push(Reply::text(&["two files written"]));
    let mut ws = open(&url, &token).await;
    until(&mut ws, |f| f["type"] == "status" && f["state"] == "ready").await;
    let frames = turn(
        &mut ws,
        json!({"type": "message", "content": "write two files"}),
    )
    .await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("done")),
        "the turn ends normally: {frames:?}"
    );

    // The after-turn sync met the refusal, counted it, and stored the other file.
    let after_turn = refusals_past(&url, 0).await;
    let paths = tokio::time::timeout(WAIT, async {
        loop {
            let paths: Vec<String> =
                sqlx::query_scalar("select path from files where kind = 'workspace' order by path")
                    .fetch_all(&db)
                    .await
                    .expect("rows");
            if !paths.is_empty() {
                return paths;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a workspace row in time");
    assert_eq!(paths, vec!["kept.txt".to_string()]);
    // The user is told, not left to find the file missing.
    let told = until(&mut ws, |f| f["type"] == "error").await;
    let told = told.last().expect("an error frame");
    assert_eq!(told["code"], "storage_refused", "{told}");
    assert!(
        told["message"]
            .as_str()
            .unwrap_or("")
            .contains("1 new or changed file"),
        "{told}"
    );

    // Idle, the reaper puts it to sleep: its save meets the refusal again …
    drop(ws);
    let asleep = refusals_past(&url, after_turn).await;
    // … and the reaper is still there for the next time it is idle.
    let mut ws = open(&url, &token).await;
    until(&mut ws, |f| f["type"] == "status" && f["state"] == "ready").await;
    drop(ws);
    refusals_past(&url, asleep).await;
    // The router is still up and ready.
    wait_ready(&url).await;
}

/// Names Supabase Storage refuses as keys when spelled as they are.
const AWKWARD: &[&str] = &[
    "résumé.txt",
    "notes#1.md",
    "draft~",
    "fifty%.txt",
    "[draft] (v2).md",
    "日本語/メモ.md",
    "why?.txt",
];

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn names_supabase_refuses_as_keys_come_back_through_sleep_and_wake(db: PgPool) {
    let gate = S3Gate::start(vec![Rule::SupabaseKeys]).await;
    let dir = data_dir();
    let api = FakeApi::start().await.expect("fake api");
    let (_child, url) = gated_router(&db, &gate, dir.path(), &api).await;
    let token = register(&url, "alice@example.com").await;

    // The agent writes each file with its own name as its content.
    let write: String = AWKWARD
        .iter()
        .map(|n| {
            format!(
                "mkdir -p \"$(dirname '/workspace/{n}')\" && printf '%s' '{n}' > '/workspace/{n}'; "
            )
        })
        .collect();
    api.push(Reply::tool_use(
        "toolu_write",
        "Bash",
        json!({"command": format!("{write}echo WROTE"), "description": "write files"}),
    ));
    api.push(Reply::text(&["written"]));
    let mut ws = open(&url, &token).await;
    until(&mut ws, |f| f["type"] == "status" && f["state"] == "ready").await;
    let frames = turn(&mut ws, json!({"type": "message", "content": "write"})).await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("done"))
    );

    // Stored after the turn, every one, under its real path.
    let mut expected: Vec<String> = AWKWARD.iter().map(|n| n.to_string()).collect();
    expected.sort();
    let paths = tokio::time::timeout(WAIT, async {
        loop {
            let paths: Vec<String> =
                sqlx::query_scalar("select path from files where kind = 'workspace' order by path")
                    .fetch_all(&db)
                    .await
                    .expect("rows");
            if paths.len() >= expected.len() {
                return paths;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the workspace rows in time");
    assert_eq!(paths, expected);

    // Idle, it sleeps: its agent state is stored last.
    drop(ws);
    tokio::time::timeout(WAIT, async {
        while !gate
            .writes()
            .iter()
            .any(|w| w.path.ends_with("/state/state.tar.gz"))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("asleep in time");
    let writes = gate.writes();
    assert!(writes.iter().all(|w| !w.refused), "{writes:?}");
    // This machine loses its copy: the wake must bring every file back from the store.
    let alice: uuid::Uuid = sqlx::query_scalar("select id from users")
        .fetch_one(&db)
        .await
        .expect("user");
    std::fs::remove_dir_all(dir.path().join("workspaces").join(alice.to_string()))
        .expect("the sleeping workspace is removed");

    let read: String = AWKWARD
        .iter()
        .map(|n| format!("printf '<%s>' \"$(cat '/workspace/{n}')\"; "))
        .collect();
    api.push(Reply::tool_use(
        "toolu_read",
        "Bash",
        json!({"command": read, "description": "read files"}),
    ));
    api.push(Reply::text(&["read"]));
    let mut ws = open(&url, &token).await;
    until(&mut ws, |f| f["type"] == "status" && f["state"] == "ready").await;
    let frames = turn(&mut ws, json!({"type": "message", "content": "read"})).await;
    let output = frames
        .iter()
        .find(|f| f["type"] == "tool_result")
        .and_then(|f| f["content"].as_str())
        .unwrap_or_else(|| panic!("no tool result: {frames:?}"))
        .to_string();
    for name in AWKWARD {
        assert!(output.contains(&format!("<{name}>")), "{name}: {output}");
    }
}
