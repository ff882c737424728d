//! The offline engine: Debian's `espeak-ng` speaks the text as WAV on stdout,
//! `opusenc` (Debian `opus-tools`) encodes it to Ogg Opus. The duration comes
//! from the WAV's sample count. Both programs get the text and audio on pipes
//! (never as arguments), each pipe written by its own task, and are killed if
//! the synthesis is dropped (the service's timeout).

use std::process::Stdio;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::{io::AsyncWriteExt, process::Command};

use super::{Engine, EngineError, Speech, audio};

/// The `espeak-ng` program.
pub const ESPEAK: &str = "espeak-ng";
/// The `opusenc` program.
pub const OPUSENC: &str = "opusenc";

/// `espeak-ng` + `opusenc`.
#[derive(Debug, Clone)]
pub struct Espeak {
    voice: String,
}

impl Espeak {
    /// Speaks with `voice` (an `espeak-ng --voices` name such as `en-us`).
    pub fn new(voice: String) -> Self {
        Self { voice }
    }

    /// Runs the two programs; also used by the benchmark to time each step.
    pub async fn wav(&self, text: &str) -> Result<Vec<u8>, EngineError> {
        let mut command = Command::new(ESPEAK);
        command.args(["--stdin", "--stdout", "-v", &self.voice]);
        run(ESPEAK, command, text.as_bytes().to_vec()).await
    }
}

impl Engine for Espeak {
    fn name(&self) -> &'static str {
        "espeak"
    }

    fn synthesize<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Speech, EngineError>> {
        Box::pin(async move {
            let wav = self.wav(text).await?;
            let duration_ms = audio::wav_duration_ms(&wav);
            let ogg = encode(wav).await?;
            Ok(Speech {
                bytes: Bytes::from(ogg),
                content_type: "audio/ogg",
                duration_ms,
            })
        })
    }
}

/// Encodes WAV to Ogg Opus with `opusenc` (speech at a voice bitrate).
pub(super) async fn encode(wav: Vec<u8>) -> Result<Vec<u8>, EngineError> {
    let mut command = Command::new(OPUSENC);
    command.args(["--quiet", "--speech", "--bitrate", "32", "-", "-"]);
    run(OPUSENC, command, wav).await
}

/// Runs `command` with `input` on stdin and returns its stdout.
pub(super) async fn run(
    program: &'static str,
    mut command: Command,
    input: Vec<u8>,
) -> Result<Vec<u8>, EngineError> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| EngineError::Spawn { program, source })?;
    let mut stdin = child.stdin.take().ok_or_else(|| EngineError::Failed {
        engine: program,
        detail: "no stdin".into(),
    })?;
    let writer = tokio::spawn(async move {
        // A program that exits early closes the pipe; its status tells why.
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
    });
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| EngineError::Spawn { program, source })?;
    let _ = writer.await;
    if !output.status.success() || output.stdout.is_empty() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(EngineError::Failed {
            engine: program,
            detail: format!(
                "{} ({})",
                output.status,
                stderr.trim().chars().take(200).collect::<String>()
            ),
        });
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn espeak_makes_ogg_opus_of_a_plausible_length() {
        let speech = Espeak::new("en-us".into())
            .synthesize("Hello there. This sentence has about ten words in it.")
            .await
            .expect("espeak-ng and opusenc are installed (apt-get install espeak-ng opus-tools)");
        assert_eq!(speech.content_type, "audio/ogg");
        assert!(speech.bytes.starts_with(b"OggS"));
        let wav_ms = speech.duration_ms.expect("duration");
        let ogg_ms = audio::ogg_opus_duration_ms(&speech.bytes).expect("ogg duration");
        assert!((1500..8000).contains(&wav_ms), "{wav_ms} ms");
        assert!(wav_ms.abs_diff(ogg_ms) < 100, "{wav_ms} vs {ogg_ms}");
    }

    #[tokio::test]
    async fn audio_the_encoder_cannot_read_is_an_engine_failure() {
        let mut command = Command::new(OPUSENC);
        command.args(["--quiet", "-", "-"]);
        let error = run(OPUSENC, command, b"not a wav".to_vec())
            .await
            .expect_err("garbage in");
        assert!(matches!(error, EngineError::Failed { .. }), "{error}");
    }
}
