//! Failures against the real CLI: upstream errors, interrupts, a hung or crashed
//! CLI, and bad frames. Each ends with a clear `error` (or `done` for an
//! interrupt) and a next turn that works.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandbox::testing::Reply;
use serde_json::json;

async fn wait_for_requests(world: &World, count: usize) {
    let deadline = Instant::now() + WAIT;
    while world.api.message_requests().len() < count {
        assert!(Instant::now() < deadline, "the CLI never called the API");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn upstream_errors_surface_as_clear_errors() {
    let world = World::new().await;
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    let cases = [
        (Reply::Status(429), "rate_limited"),
        (Reply::Status(529), "overloaded"),
        (Reply::Status(500), "upstream_error"),
        (Reply::MidStreamError, "overloaded"),
    ];
    for (reply, code) in cases {
        world.api.push(reply);
        let started = Instant::now();
        let frames = router.turn(&id, "hello").await;
        let end = frames.last().expect("end");
        assert_eq!(end["type"], "error", "{code}: {frames:?}");
        assert_eq!(end["code"], code, "{frames:?}");
        assert!(!end["message"].as_str().unwrap_or_default().is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{code} took {:?}",
            started.elapsed()
        );
    }
    world.api.push(Reply::text(&["fine again"]));
    let frames = router.turn(&id, "hello").await;
    assert_eq!(text(&frames), "fine again");
}

#[tokio::test]
async fn interrupt_stops_the_turn_within_a_second() {
    let world = World::new().await;
    world.api.push(Reply::Stall(Duration::from_secs(60)));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    router.message(&id, "think for a long time").await;
    wait_for_requests(&world, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    router
        .send(json!({"type": "interrupt", "conversation_id": id}))
        .await;
    let frames = router.turn_end(&id).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}: {frames:?}",
        started.elapsed()
    );
    let end = frames.last().expect("end");
    assert_eq!(end["type"], "done", "{frames:?}");
    assert_eq!(end["stopped"], true, "a stopped turn says so: {end}");

    world.api.push(Reply::text(&["back"]));
    let frames = router.turn(&id, "again").await;
    assert_eq!(text(&frames), "back", "{frames:?}");
    assert!(
        frames.last().expect("end").get("stopped").is_none(),
        "only a stopped turn says so: {frames:?}"
    );
}

#[tokio::test]
async fn a_hung_cli_times_out_and_the_next_turn_works() {
    let world = World::new().await;
    world.api.push(Reply::Stall(Duration::from_secs(60)));
    let sandbox = world.sandbox(&["--turn-idle-timeout", "3s"]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    let started = Instant::now();
    let frames = router.turn(&id, "hang").await;
    let end = frames.last().expect("end");
    assert_eq!(
        (end["type"].as_str(), end["code"].as_str()),
        (Some("error"), Some("agent_timeout")),
        "{frames:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    world.api.push(Reply::text(&["recovered"]));
    let frames = router.turn(&id, "again").await;
    assert_eq!(text(&frames), "recovered", "{frames:?}");
}

#[tokio::test]
async fn a_crashed_cli_gives_an_error_and_the_next_turn_works() {
    let world = World::new().await;
    world.api.push(Reply::Stall(Duration::from_secs(60)));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    router.message(&id, "first").await;
    wait_for_requests(&world, 1).await;
    let pids = sandbox.cli_pids();
    assert_eq!(pids.len(), 1, "one CLI expected: {pids:?}");
    std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .expect("kill");

    let frames = router.turn_end(&id).await;
    let end = frames.last().expect("end");
    assert_eq!(
        (end["type"].as_str(), end["code"].as_str()),
        (Some("error"), Some("agent_crashed")),
        "{frames:?}"
    );

    world.api.push(Reply::text(&["alive"]));
    let frames = router.turn(&id, "second").await;
    assert_eq!(text(&frames), "alive", "{frames:?}");
}

#[tokio::test]
async fn bad_frames_get_errors_and_change_nothing() {
    let world = World::new().await;
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    let oversized =
        json!({"type": "message", "conversation_id": id, "content": "x".repeat(1_100_000)});
    let cases = [
        ("not json".to_string(), "bad_frame"),
        (
            json!({"type": "launch_missiles"}).to_string(),
            "unknown_type",
        ),
        (
            json!({"type": "message", "content": "no conversation"}).to_string(),
            "bad_frame",
        ),
        (json!({"content": "no type"}).to_string(), "bad_frame"),
        (
            json!({"type": "message", "conversation_id": "../../etc", "content": "x"}).to_string(),
            "bad_conversation_id",
        ),
        (
            json!({"type": "reply", "call_id": "nobody", "result": {}}).to_string(),
            "unknown_type",
        ),
        (oversized.to_string(), "frame_too_large"),
    ];
    for (text, code) in cases {
        router.send_text(text).await;
        let frame = router.next().await;
        assert_eq!(
            (frame["type"].as_str(), frame["code"].as_str()),
            (Some("error"), Some(code)),
            "{frame}"
        );
        assert!(frame.get("seq").is_none(), "{frame}");
    }
    assert!(world.api.message_requests().is_empty());
    assert!(sandbox.cli_pids().is_empty());

    world.api.push(Reply::text(&["still here"]));
    let frames = router.turn(&id, "hello").await;
    assert_eq!(
        frames[0]["seq"], 1,
        "bad frames used no sequence numbers: {frames:?}"
    );
    assert_eq!(text(&frames), "still here");
}

#[tokio::test]
async fn a_second_message_mid_turn_is_refused() {
    let world = World::new().await;
    world.api.push(Reply::Stall(Duration::from_secs(2)));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    router.message(&id, "first").await;
    router.message(&id, "second").await;
    let frames = router.turn_end(&id).await;
    let refused: Vec<_> = frames
        .iter()
        .filter(|f| f["code"] == "turn_in_progress")
        .collect();
    assert_eq!(refused.len(), 1, "{frames:?}");
    assert_eq!(text(&frames), "late");
}

#[tokio::test]
async fn the_router_needs_the_workspace_token() {
    let world = World::new().await;
    let sandbox = world.sandbox(&[]).await;
    for header in [None, Some("Bearer wrong-token")] {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ws", sandbox.listen)
            .into_client_request()
            .expect("request");
        if let Some(header) = header {
            request
                .headers_mut()
                .insert("authorization", header.parse().expect("header"));
        }
        let refused = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("in time");
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_cli_that_died_between_turns_is_replaced_quietly() {
    let world = World::new().await;
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    world.api.push(Reply::text(&["first"]));
    router.turn(&id, "one").await;
    let pids = sandbox.cli_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .expect("kill");
    tokio::time::sleep(Duration::from_millis(300)).await;

    world.api.push(Reply::text(&["second"]));
    let frames = router.turn(&id, "two").await;
    assert!(of_type(&frames, "error").is_empty(), "{frames:?}");
    assert_eq!(text(&frames), "second");
    let last = world.api.message_requests().pop().expect("request");
    assert!(
        last.body["messages"].to_string().contains("one"),
        "resumed with history"
    );
}
