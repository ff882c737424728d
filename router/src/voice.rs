//! Text to speech: the [`Engine`] seam, its engines, and the service that turns
//! a text into a stored, signed audio file for one user ([`Voice`]).
//!
//! Owns synthesis, engine keys (they never leave the router), the audio objects
//! under `users/{id}/voice/…`, their `files` rows and their signed URLs. It does
//! not decide *when* to speak: the sandbox cuts answers into sentences and calls
//! `speak` for each (the `call` frames of `sandbox/README.md`), and the proxy hands
//! those calls here.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::BoxFuture;

/// Ogg Opus and WAV facts: durations without a decoder.
pub mod audio;
/// ElevenLabs' `POST /v1/text-to-speech/{voice_id}`.
pub mod elevenlabs;
/// The offline default: Debian's `espeak-ng`, encoded to Ogg Opus by `opusenc`.
pub mod espeak;
/// OpenAI-compatible `POST /v1/audio/speech`.
pub mod openai;
/// The neural local engine: Piper with a voice from a registry package.
pub mod piper;
/// The service: validation, plan check, synthesis with a timeout, storage.
mod service;
/// Signed, expiring audio URLs (`/api/voice/{id}?expires=…&sig=…`).
pub mod signing;
/// Speech slots: a few syntheses at once, one per user.
mod slots;

pub use service::{PARALLEL_SYNTHESES, Spoken, Voice, VoiceError, VoiceSettings};
pub use signing::Signer;

/// Synthesised audio.
#[derive(Debug, Clone)]
pub struct Speech {
    /// The encoded audio.
    pub bytes: Bytes,
    /// Its MIME type (`audio/ogg`, `audio/mpeg`).
    pub content_type: &'static str,
    /// How long it plays, when known.
    pub duration_ms: Option<u64>,
}

impl Speech {
    /// The file extension that matches [`Speech::content_type`].
    pub fn extension(&self) -> &'static str {
        match self.content_type {
            "audio/mpeg" => "mp3",
            "audio/wav" => "wav",
            _ => "ogg",
        }
    }

    /// The audio as its bytes say it is (a provider may answer in another format
    /// than asked for); the engine's claim when the bytes are not recognised.
    pub fn sniffed(mut self) -> Self {
        self.content_type = match infer::get(&self.bytes).map(|t| t.mime_type()) {
            Some("audio/ogg" | "audio/opus") => "audio/ogg",
            Some("audio/mpeg") => "audio/mpeg",
            Some("audio/x-wav" | "audio/wav") => "audio/wav",
            _ => self.content_type,
        };
        self
    }
}

/// Why an engine made no audio.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A local program could not be run.
    #[error("{program} could not be run: {source}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The engine ran and failed.
    #[error("{engine} failed: {detail}")]
    Failed {
        /// The engine's name.
        engine: &'static str,
        /// What it said (never a key).
        detail: String,
    },
    /// An HTTP engine could not be reached or answered badly.
    #[error("{engine} could not be reached: {source}")]
    Http {
        /// The engine's name.
        engine: &'static str,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
}

/// A text-to-speech engine.
pub trait Engine: Send + Sync + 'static {
    /// Its name in configuration and logs (`espeak`, `openai`, `elevenlabs`).
    fn name(&self) -> &'static str;
    /// Speaks `text` (plain text, already cleaned and bounded by the service).
    fn synthesize<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Speech, EngineError>>;
}

/// Which engine `JARVIS_TTS_ENGINE` picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// `espeak-ng` + `opusenc`, offline.
    Espeak,
    /// Piper (neural, offline) + `opusenc`.
    Piper,
    /// An OpenAI-compatible `/v1/audio/speech`.
    Openai,
    /// ElevenLabs.
    Elevenlabs,
    /// No speech at all (`speak` answers `voice_unavailable`).
    Off,
}

/// Builds the configured engine; `None` for `off`. An HTTP engine without a
/// key is a configuration error, told at start-up.
pub fn engine(config: &crate::config::Config) -> anyhow::Result<Option<Arc<dyn Engine>>> {
    use anyhow::Context;
    let timeout = config.tts_timeout;
    let key = || {
        config
            .tts_api_key
            .clone()
            .context("JARVIS_TTS_API_KEY is required for this JARVIS_TTS_ENGINE")
    };
    Ok(match config.tts_engine {
        EngineKind::Off => None,
        EngineKind::Espeak => Some(Arc::new(espeak::Espeak::new(
            config.tts_voice.clone().unwrap_or_else(|| "en-us".into()),
        ))),
        EngineKind::Piper => Some(Arc::new(piper::Piper::new(
            config.piper_bin.clone(),
            config.piper_model.clone(),
        ))),
        EngineKind::Openai => Some(Arc::new(openai::OpenAi::new(
            config
                .tts_url
                .clone()
                .unwrap_or_else(|| "https://api.openai.com".into()),
            key()?,
            config
                .tts_model
                .clone()
                .unwrap_or_else(|| "gpt-4o-mini-tts".into()),
            config.tts_voice.clone().unwrap_or_else(|| "alloy".into()),
            timeout,
        )?)),
        EngineKind::Elevenlabs => Some(Arc::new(elevenlabs::ElevenLabs::new(
            config
                .tts_url
                .clone()
                .unwrap_or_else(|| "https://api.elevenlabs.io".into()),
            key()?,
            config
                .tts_model
                .clone()
                .unwrap_or_else(|| "eleven_flash_v2_5".into()),
            config
                .tts_voice
                .clone()
                .unwrap_or_else(|| "JBFqnCBsd6RMkjVDRZzb".into()),
            timeout,
        )?)),
    })
}

/// An HTTP client for a cloud engine. The service's own timeout ends a slow
/// synthesis (with one clear message); the client's, later, is a backstop.
fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout * 2 + Duration::from_secs(1))
        .build()
        .context("building the text-to-speech HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speech(bytes: &'static [u8], content_type: &'static str) -> Speech {
        Speech {
            bytes: Bytes::from_static(bytes),
            content_type,
            duration_ms: None,
        }
    }

    #[test]
    fn the_bytes_decide_the_content_type_when_they_are_recognised() {
        let mp3 = speech(b"ID3\x04\x00\x00\x00\x00\x00\x00rest", "audio/ogg").sniffed();
        assert_eq!((mp3.content_type, mp3.extension()), ("audio/mpeg", "mp3"));
        let ogg = speech(
            b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00",
            "audio/mpeg",
        )
        .sniffed();
        assert_eq!((ogg.content_type, ogg.extension()), ("audio/ogg", "ogg"));
        let unknown = speech(b"\x00\x01\x02\x03 not audio", "audio/mpeg").sniffed();
        assert_eq!(unknown.content_type, "audio/mpeg");
    }
}
