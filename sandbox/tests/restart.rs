//! Conversations outliving processes and connections: a restarted sandbox resumes
//! from the CLI's transcript with rising sequence numbers, a reconnecting router
//! replays what it missed (and the other links stay), idle CLIs make room for other conversations, and local
//! mode works over unix sockets.

mod common;

use std::time::Duration;

use common::*;
use sandbox::testing::Reply;
use serde_json::Value;

fn mentions(request: &sandbox::testing::RecordedRequest, needle: &str) -> bool {
    request.body["messages"].to_string().contains(needle)
}

fn last_seq(frames: &[Value]) -> u64 {
    frames
        .iter()
        .filter_map(|f| f["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_restarted_sandbox_resumes_the_conversation() {
    let world = World::new().await;
    let id = conversation();
    world
        .api
        .push(Reply::text(&["I will remember ", "the number."]));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let first = router.turn(&id, "remember the number 4242").await;
    assert_eq!(first.last().expect("end")["type"], "done");
    sandbox.kill().await;

    world.api.push(Reply::text(&["It was 4242."]));
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let second = router.turn(&id, "which number?").await;
    assert_eq!(text(&second), "It was 4242.", "{second:?}");
    assert!(
        second[0]["seq"].as_u64() > Some(last_seq(&first)),
        "{first:?} {second:?}"
    );

    let requests = world.api.message_requests();
    let last = requests.last().expect("request");
    assert!(
        mentions(last, "remember the number 4242"),
        "history missing: {}",
        last.body["messages"]
    );
    assert!(
        mentions(last, "I will remember the number."),
        "answer missing: {}",
        last.body["messages"]
    );
    assert!(mentions(last, "which number?"));
}

#[tokio::test]
async fn a_reconnecting_router_replays_after_its_last_seq() {
    let world = World::new().await;
    let id = conversation();
    world.api.push(Reply::text(&["one ", "two ", "three"]));
    let sandbox = world.sandbox(&[]).await;
    let mut first = sandbox.connect().await;
    let frames = first.turn(&id, "count").await;

    let mut second = sandbox.connect().await;
    let (replays, live) = second.resume(&id, 2).await;
    assert!(live.is_empty(), "{live:?}");
    let expected: Vec<&Value> = frames
        .iter()
        .filter(|f| f["seq"].as_u64() > Some(2))
        .collect();
    let replayed = replayed(&replays);
    assert_eq!(replayed.iter().collect::<Vec<_>>(), expected);
    let end = replays.last().expect("replay");
    assert_eq!(end["last_seq"].as_u64(), Some(last_seq(&frames)));
    assert_eq!(end["first_kept"], 1);

    // Both links stay: each gets the next turn's events.
    world.api.push(Reply::text(&["again"]));
    let frames = second.turn(&id, "more").await;
    assert_eq!(text(&frames), "again");
    let seen_by_first = first.turn_end(&id).await;
    assert_eq!(seen_by_first, frames);
}

#[tokio::test]
async fn one_agent_at_a_time_and_evicted_conversations_resume() {
    let world = World::new().await;
    let sandbox = world.sandbox(&["--max-agents", "1"]).await;
    let mut router = sandbox.connect().await;
    let (a, b) = (conversation(), conversation());
    world.api.push(Reply::text(&["A noted"]));
    router.turn(&a, "alpha secret 111").await;
    world.api.push(Reply::text(&["B noted"]));
    router.turn(&b, "bravo secret 222").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sandbox.cli_pids().len() <= 1, "{:?}", sandbox.cli_pids());

    world.api.push(Reply::text(&["A again"]));
    let frames = router.turn(&a, "alpha again").await;
    assert_eq!(text(&frames), "A again");
    let last = world.api.message_requests().pop().expect("request");
    assert!(
        mentions(&last, "alpha secret 111"),
        "{}",
        last.body["messages"]
    );
    assert!(
        !mentions(&last, "bravo secret 222"),
        "{}",
        last.body["messages"]
    );
}

#[tokio::test]
async fn local_mode_works_over_unix_sockets() {
    let world = World::new().await;
    // The router's gateway socket, here a unix socket that forwards to the fake.
    let gateway = world.tmp.path().join("gateway.sock");
    let listener = tokio::net::UnixListener::bind(&gateway).expect("bind gateway");
    let upstream = world.api.url().trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut tcp) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
                }
            });
        }
    });
    let socket = world.tmp.path().join("sandbox.sock");
    let listen = format!("unix:{}", socket.display());
    let gateway_arg = gateway.display().to_string();
    world.api.push(Reply::text(&["via ", "sockets"]));
    let sandbox = world
        .sandbox_with(
            &["--listen", &listen, "--gateway-socket", &gateway_arg],
            false,
        )
        .await;
    assert_eq!(sandbox.listen, listen);
    let mut router = sandbox.connect_unix(&socket).await;
    let id = conversation();
    let frames = router.turn(&id, "hello").await;
    assert_eq!(text(&frames), "via sockets", "{frames:?}");
    assert_eq!(
        world.api.message_requests()[0].api_key.as_deref(),
        Some(TOKEN)
    );
}

#[tokio::test]
async fn sigterm_stops_the_sandbox_and_its_cli_with_a_router_connected() {
    let world = World::new().await;
    let mut sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    world.api.push(Reply::text(&["hi"]));
    router.turn(&conversation(), "hello").await;
    let cli = sandbox.cli_pids();
    assert_eq!(cli.len(), 1, "{cli:?}");
    let pid = sandbox.child.id().expect("pid");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(10), sandbox.child.wait())
        .await
        .expect("the sandbox stops on SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{}", cli[0])).exists() {
        let state = std::fs::read_to_string(format!("/proc/{}/stat", cli[0])).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI outlived the sandbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
