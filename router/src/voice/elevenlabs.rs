//! ElevenLabs: `POST {base}/v1/text-to-speech/{voice_id}?output_format=mp3_44100_64`
//! with `{text, model_id}` and the `xi-api-key` header; the answer's body is MP3.
//! The key comes from the router's environment only.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::json;

use super::{Engine, EngineError, Speech, http_client};

const NAME: &str = "elevenlabs";
/// The format asked for (a voice-quality MP3 every browser plays).
pub const OUTPUT_FORMAT: &str = "mp3_44100_64";

/// The ElevenLabs engine.
#[derive(Debug, Clone)]
pub struct ElevenLabs {
    http: reqwest::Client,
    url: String,
    key: String,
    model: String,
}

impl ElevenLabs {
    /// An engine at `base` (e.g. `https://api.elevenlabs.io`) speaking with `voice_id`.
    pub fn new(
        base: String,
        key: String,
        model: String,
        voice_id: String,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let voice: String =
            percent_encoding::utf8_percent_encode(&voice_id, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        Ok(Self {
            http: http_client(timeout)?,
            url: format!(
                "{}/v1/text-to-speech/{voice}?output_format={OUTPUT_FORMAT}",
                base.trim_end_matches('/')
            ),
            key,
            model,
        })
    }
}

impl Engine for ElevenLabs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn synthesize<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Speech, EngineError>> {
        Box::pin(async move {
            let response = self
                .http
                .post(&self.url)
                .header("xi-api-key", &self.key)
                .json(&json!({"text": text, "model_id": self.model}))
                .send()
                .await
                .map_err(|source| EngineError::Http {
                    engine: NAME,
                    source,
                })?;
            let bytes = audio_body(NAME, response).await?;
            Ok(Speech {
                bytes,
                content_type: "audio/mpeg",
                duration_ms: None,
            })
        })
    }
}

/// The audio body of a successful answer; an error status becomes
/// [`EngineError::Failed`] with the start of its body (the provider's message).
pub(super) async fn audio_body(
    engine: &'static str,
    response: reqwest::Response,
) -> Result<Bytes, EngineError> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|source| EngineError::Http { engine, source })?;
    if !status.is_success() {
        let detail = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        return Err(EngineError::Failed {
            engine,
            detail: format!("HTTP {status}: {detail}"),
        });
    }
    if bytes.is_empty() {
        return Err(EngineError::Failed {
            engine,
            detail: "an empty answer".into(),
        });
    }
    Ok(bytes)
}
