//! Voice answers (issue 8), the router's side: the `speak` service with the real
//! local engines (espeak-ng + opusenc, Piper), its signed URLs and file rows, the
//! cloud engines against fakes that speak their wire formats, the user's setting and
//! the sandboxes' endpoint. Spoken turns end to end are in `voice_turns.rs`.

mod common;

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use common::{
    TestApp,
    voice::{
        Fake, anonymous, assert_plausible, decoded_ms, patch_me, piper_paths, query, start_fake,
        voice_files,
    },
};
use router::voice::EngineKind;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

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
    let metrics = app.metrics().await;
    let text = String::from_utf8_lossy(&metrics.bytes);
    assert!(
        text.contains(r#"jarvis_voice_syntheses_total{engine="piper",outcome="ok"} 1"#),
        "{text}"
    );
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
        let metrics = app.metrics().await;
        let text = String::from_utf8_lossy(&metrics.bytes);
        let line =
            format!(r#"jarvis_voice_syntheses_total{{engine="openai",outcome="{outcome}"}} 1"#);
        assert!(text.contains(&line), "{line} in {text}");
        assert!(voice_files(&app.db, user.id).await.is_empty());
    }
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
    let empty = app
        .call_sandbox(speak(Some(&token), json!({"text": "   "})))
        .await;
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
        .call_sandbox(speak(Some(&token), json!({"text": "Hello."})))
        .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(voice_files(&app.db, alice.id).await.len(), 1);
}
