//! A warm pool's sandbox (issue 20): started with no workspace, its CLI already
//! running with a placeholder key; claimed once over its listener; the spare
//! CLI answers the first new conversation with the workspace token added by the
//! gateway forwarder, and that conversation keeps the spare's session.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{TOKEN, WAIT, World, conversation, text};
use reqwest::StatusCode;
use sandbox::testing::Reply;
use tokio::net::{TcpStream, UnixListener};

const SECRET: &str = "claim-secret-for-tests";

/// A unix socket relaying to the fake API byte for byte: the router's gateway
/// socket, as a local jail sees it.
fn gateway_socket(world: &World) -> PathBuf {
    let path = world.tmp.path().join("gateway.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let upstream = world.api.url().trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut tcp) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
                }
            });
        }
    });
    path
}

async fn claim(listen: &str, secret: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("http://{listen}/v1/claim"))
        .bearer_auth(secret)
        .json(&serde_json::json!({ "token": token }))
        .timeout(WAIT)
        .send()
        .await
        .expect("the claim is answered")
        .status()
}

async fn wait_for(ready: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition met in time");
}

#[tokio::test]
async fn an_unassigned_sandbox_is_claimed_once_and_its_spare_cli_answers_with_the_token() {
    let world = World::new().await;
    let socket = gateway_socket(&world);
    let socket = socket.to_str().expect("utf-8 path");
    let sandbox = world
        .unassigned_sandbox(
            SECRET,
            &[
                "--listen",
                "127.0.0.1:0",
                "--gateway-socket",
                socket,
                "--spare-agent",
            ],
        )
        .await;
    // The spare CLI runs before anyone claimed the sandbox.
    wait_for(|| sandbox.cli_pids().len() == 1).await;
    let spare = sandbox.cli_pids()[0];

    // Unclaimed, nobody gets in; only its secret claims it, once.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", sandbox.listen)).await;
    assert!(refused.is_err(), "an unclaimed sandbox has no router");
    assert_eq!(
        claim(&sandbox.listen, "guessed", "jw_mallory").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        claim(&sandbox.listen, SECRET, TOKEN).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        claim(&sandbox.listen, SECRET, "jw_mallory").await,
        StatusCode::CONFLICT
    );

    let mut router = sandbox.connect().await;
    let c = conversation();
    let first = router.turn(&c, "hello one").await;
    assert_eq!(text(&first), "ok", "{first:?}\n{}", sandbox.log());
    // The model call came with the workspace token, put in by the forwarder.
    let calls = world.api.message_requests();
    assert!(!calls.is_empty());
    assert!(
        calls.iter().all(|r| r.api_key.as_deref() == Some(TOKEN)),
        "{:?}",
        calls.iter().map(|r| &r.api_key).collect::<Vec<_>>()
    );
    // The spare answered: it is the conversation's CLI now, and a new spare runs.
    wait_for(|| sandbox.cli_pids().len() == 2).await;
    assert!(sandbox.cli_pids().contains(&spare));
    let map: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(world.state().join("jarvis/sessions.json")).expect("map"),
    )
    .expect("JSON");
    let session = map[&c].as_str().expect("the conversation's session");
    assert_ne!(session, c);

    // The conversation goes on in that session, with its history.
    world.api.push(Reply::Echo);
    let second = router.turn(&c, "hello two").await;
    assert!(
        text(&second).contains("hello one | hello two"),
        "{second:?}"
    );
    assert!(sandbox.cli_pids().contains(&spare), "the same CLI went on");
}
