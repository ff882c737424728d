//! An OpenAI-compatible speech API: `POST {base}/v1/audio/speech` with
//! `{model, input, voice, response_format: "opus"}` and `Authorization: Bearer
//! <key>`; the answer's body is Ogg Opus. The key comes from the router's
//! environment only.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;

use super::{Engine, EngineError, Speech, audio, http_client};

const NAME: &str = "openai";

/// The OpenAI-compatible engine.
#[derive(Debug, Clone)]
pub struct OpenAi {
    http: reqwest::Client,
    url: String,
    key: String,
    model: String,
    voice: String,
}

impl OpenAi {
    /// An engine at `base` (e.g. `https://api.openai.com`).
    pub fn new(
        base: String,
        key: String,
        model: String,
        voice: String,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: http_client(timeout)?,
            url: format!("{}/v1/audio/speech", base.trim_end_matches('/')),
            key,
            model,
            voice,
        })
    }
}

impl Engine for OpenAi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn synthesize<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Speech, EngineError>> {
        Box::pin(async move {
            let body = json!({
                "model": self.model,
                "input": text,
                "voice": self.voice,
                "response_format": "opus",
            });
            let response = self
                .http
                .post(&self.url)
                .bearer_auth(&self.key)
                .json(&body)
                .send()
                .await
                .map_err(|source| EngineError::Http {
                    engine: NAME,
                    source,
                })?;
            let bytes = super::elevenlabs::audio_body(NAME, response).await?;
            Ok(Speech {
                duration_ms: audio::ogg_opus_duration_ms(&bytes),
                bytes,
                content_type: "audio/ogg",
            })
        })
    }
}
