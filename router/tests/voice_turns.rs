//! Spoken turns end to end (issue 8): a real router, a real sandbox under
//! bubblewrap running the real CLI against the fake model, the real espeak-ng +
//! opusenc. Each sentence becomes a `voice` event, in order and before `done`; a
//! failing engine or a plan without voice never costs the text answer.

mod common;

use std::{path::Path, sync::Arc, time::Duration};

use axum::http::StatusCode;
use common::{
    live::{Live, of_type, text},
    voice::{Fake, assert_plausible, decoded_ms, fetch, start_fake, voice_files},
};
use router::voice::EngineKind;
use sandbox::testing::{Block, Reply};
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_voice_turn_speaks_each_sentence_in_order_before_done(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::text(&[
        "Hello Alice. The weather",
        " is fine today.\n\n```sh\necho secret code\n```\n",
        "Goodbye",
    ]));
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser
        .send(json!({"type": "message", "content": "hi", "voice": true}))
        .await;
    let frames = browser.turn().await;
    assert_eq!(frames.last().expect("frames")["type"], "done", "{frames:?}");
    assert!(text(&frames).contains("echo secret code"));
    let voices = of_type(&frames, "voice");
    let transcripts: Vec<&str> = voices
        .iter()
        .filter_map(|v| v["transcript"].as_str())
        .collect();
    assert_eq!(
        transcripts,
        vec![
            "Hello Alice.",
            "The weather is fine today.",
            "Code omitted.",
            "Goodbye"
        ],
        "{frames:?}"
    );
    // Every voice event comes before `done`, numbered in order with the text.
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for voice in &voices {
        assert!(voice.get("error").is_none(), "{voice}");
        let url = voice["url"].as_str().expect("url");
        assert!(url.starts_with("/api/voice/"), "{url}");
        let (status, audio) = fetch(&live, url).await;
        assert_eq!(status, 200);
        assert_plausible(
            voice["transcript"].as_str().expect("transcript"),
            decoded_ms(&audio),
        );
    }
    assert_eq!(voice_files(&live.app.db, alice.id).await.len(), 4);
    // The stored conversation gives the voice events fresh URLs that play.
    let conversation = frames[0]["conversation_id"].as_str().expect("id");
    let stored = live
        .app
        .get(&format!("/api/conversations/{conversation}"), &alice.access)
        .await;
    let events = stored.body["messages"][1]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let stored_voices: Vec<&Value> = events.iter().filter(|e| e["type"] == "voice").collect();
    assert_eq!(stored_voices.len(), 4, "{}", stored.body);
    let (status, _) = fetch(&live, stored_voices[0]["url"].as_str().expect("url")).await;
    assert_eq!(status, 200);
    // Nothing of the audio is under the workspace (the agent cannot touch it).
    assert!(!Path::new(&live.workspace(&alice)).join("voice").exists());
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_hanging_engine_still_delivers_the_text_and_done_with_a_voice_error(db: PgPool) {
    let fake = Arc::new(Fake {
        status: 0,
        ..Fake::default()
    });
    let url = start_fake(fake.clone()).await;
    let live = Live::with_config(db, |c| {
        c.tts_engine = EngineKind::Openai;
        c.tts_url = Some(url);
        c.tts_api_key = Some("sk-never-in-a-sandbox".into());
        c.tts_timeout = Duration::from_secs(1);
    })
    .await;
    let alice = live.app.register("alice@example.com").await;
    live.api
        .push(Reply::text(&["First sentence. Second sentence. Third."]));
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser
        .send(json!({"type": "message", "content": "hi", "voice": true}))
        .await;
    let frames = browser.turn().await;
    assert_eq!(frames.last().expect("frames")["type"], "done", "{frames:?}");
    assert_eq!(text(&frames), "First sentence. Second sentence. Third.");
    let voices = of_type(&frames, "voice");
    assert_eq!(voices.len(), 1, "one clear error, nothing more: {voices:?}");
    assert_eq!(voices[0]["error"]["code"], "voice_failed");
    assert!(
        voices[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not answer"))
    );
    assert!(voice_files(&live.app.db, alice.id).await.is_empty());
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_plan_without_voice_gets_the_text_and_voice_unavailable_and_the_setting_speaks(
    db: PgPool,
) {
    let live = Live::with_config(db, |c| {
        c.plans = Some(r#"{"free": {"voice": false}}"#.into());
    })
    .await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::text(&["Just text. More text."]));
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser
        .send(json!({"type": "message", "content": "hi", "voice": true}))
        .await;
    let frames = browser.turn().await;
    assert_eq!(frames.last().expect("frames")["type"], "done", "{frames:?}");
    assert_eq!(text(&frames), "Just text. More text.");
    let voices = of_type(&frames, "voice");
    assert_eq!(voices.len(), 1, "{voices:?}");
    assert_eq!(voices[0]["error"]["code"], "voice_unavailable");
    // With the setting on but no voice in the plan, turns are plain text.
    sqlx::query("update users set voice_answers = true where id = $1")
        .bind(alice.id)
        .execute(&live.app.db)
        .await
        .expect("setting");
    live.api.push(Reply::text(&["Plain."]));
    let conversation = frames[0]["conversation_id"]
        .as_str()
        .expect("id")
        .to_string();
    browser.message("again", Some(&conversation)).await;
    let frames = browser.turn().await;
    assert_eq!(frames.last().expect("frames")["type"], "done");
    assert!(of_type(&frames, "voice").is_empty(), "{frames:?}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_users_setting_speaks_answers_unless_a_message_says_no(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let on = live
        .app
        .send(
            axum::http::Method::PATCH,
            "/api/me",
            Some(&alice.access),
            Some(json!({"voice_answers": true})),
        )
        .await;
    assert_eq!(on.status, StatusCode::OK);
    live.api.push(Reply::text(&["Spoken by default."]));
    live.api.push(Reply::text(&["Not spoken."]));
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser.message("hi", None).await;
    let frames = browser.turn().await;
    let voices = of_type(&frames, "voice");
    assert_eq!(voices.len(), 1, "{frames:?}");
    assert_eq!(voices[0]["transcript"], "Spoken by default.");
    let conversation = frames[0]["conversation_id"]
        .as_str()
        .expect("id")
        .to_string();
    browser
        .send(json!({"type": "message", "content": "quiet", "conversation_id": conversation, "voice": false}))
        .await;
    let frames = browser.turn().await;
    assert_eq!(frames.last().expect("frames")["type"], "done");
    assert!(of_type(&frames, "voice").is_empty(), "{frames:?}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_first_sentence_is_spoken_while_the_answer_is_still_being_written(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    // The answer's first sentence, then a tool that waits for this test's signal,
    // then the rest: the first voice event must arrive while the tool waits.
    live.api.push(Reply::Blocks(vec![
        Block::Text(vec!["Let me check that for you. ".into()]),
        Block::ToolUse {
            id: "toolu_wait".into(),
            name: "Bash".into(),
            input: json!({"command": "while [ ! -f go ]; do sleep 0.05; done; echo went", "description": "wait"}),
        },
    ]));
    live.api.push(Reply::text(&["All done."]));
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser
        .send(json!({"type": "message", "content": "check", "voice": true}))
        .await;
    let before = browser
        .until(|f| ["voice", "done", "error"].contains(&f["type"].as_str().unwrap_or("")))
        .await;
    let first = before.last().expect("frames");
    assert_eq!(first["type"], "voice", "{before:?}");
    assert_eq!(first["transcript"], "Let me check that for you.");
    assert!(of_type(&before, "tool_result").is_empty(), "{before:?}");
    std::fs::write(live.workspace(&alice).join("go"), "").expect("signal");
    let rest = browser.turn().await;
    assert_eq!(rest.last().expect("frames")["type"], "done", "{rest:?}");
    let voices = of_type(&rest, "voice");
    assert_eq!(voices.len(), 1, "{rest:?}");
    assert_eq!(voices[0]["transcript"], "All done.");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_agents_own_speak_tool_makes_a_voice_event(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::tool_use(
        "toolu_speak",
        "mcp__jarvis__speak",
        json!({"text": "Spoken by the agent itself."}),
    ));
    live.api.push(Reply::text(&["I said it."]));
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser.message("say something", None).await;
    let frames = browser.turn().await;
    assert_eq!(frames.last().expect("frames")["type"], "done", "{frames:?}");
    let voices = of_type(&frames, "voice");
    assert_eq!(
        voices.len(),
        1,
        "a text-only turn speaks only what the agent asked: {frames:?}"
    );
    assert_eq!(voices[0]["transcript"], "Spoken by the agent itself.");
    let (status, audio) = fetch(&live, voices[0]["url"].as_str().expect("url")).await;
    assert_eq!(status, 200);
    assert_plausible("Spoken by the agent itself.", decoded_ms(&audio));
    let result = of_type(&frames, "tool_result");
    assert_eq!(result[0]["is_error"], false, "{result:?}");
}
