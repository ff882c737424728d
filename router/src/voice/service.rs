//! The voice service behind `speak`: checks the text and the user's plan, runs
//! the engine under a timeout, stores the audio under `users/{id}/voice/…`,
//! records it in `files` (kind `voice`) and answers with a signed URL.
//! A call that fails stores nothing.

use std::{sync::Arc, time::Duration};

use sandbox::protocol::ErrorBody;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Engine, Signer};
use crate::{
    db,
    metrics::{Metrics, VoiceLabels},
    plans::Plans,
    storage::Storage,
};

/// Longest text `speak` takes at all; longer is refused (shorter but over
/// [`VoiceSettings::max_chars`] is cut).
pub const MAX_INPUT_CHARS: usize = 100_000;
/// Syntheses running at once in this router (local engines use the CPU); one
/// user holds at most `slots::PER_USER` of them.
pub const PARALLEL_SYNTHESES: usize = 4;
/// What the transcript gets when the text was cut.
pub const CUT_NOTE: &str = " […the rest is not spoken]";

/// The service's settings (from `JARVIS_TTS_*` and `JARVIS_VOICE_*`).
#[derive(Debug, Clone)]
pub struct VoiceSettings {
    /// Longest a synthesis may take.
    pub timeout: Duration,
    /// Characters spoken per call at most; the rest is cut.
    pub max_chars: usize,
}

/// What `speak` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Spoken {
    /// The `files` row of the audio.
    pub id: Uuid,
    /// A signed, expiring URL of the audio (`/api/voice/{id}?…`).
    pub url: String,
    /// What was spoken (cut texts say so).
    pub transcript: String,
    /// The audio's MIME type.
    pub content_type: String,
    /// How long it plays, when the engine tells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// Why `speak` made no audio.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// Empty, unspeakable or far too long text.
    #[error("{0}")]
    InvalidParams(String),
    /// The plan has no voice, or speech is off on this server.
    #[error("{0}")]
    Unavailable(String),
    /// The engine failed or did not answer in time.
    #[error("{0}")]
    Failed(String),
    /// The plan's storage has no room for the audio (`crate::quota`).
    #[error("{0}; this part is not spoken")]
    QuotaExceeded(String),
    /// The database failed (logged, not told).
    #[error("the voice could not be stored; try again")]
    Db(#[from] sqlx::Error),
    /// Storage failed (logged, not told).
    #[error("the voice could not be stored; try again")]
    Storage(#[from] crate::storage::StorageError),
}

impl From<crate::quota::QuotaError> for VoiceError {
    fn from(e: crate::quota::QuotaError) -> Self {
        match e {
            crate::quota::QuotaError::Db(e) => Self::Db(e),
            crate::quota::QuotaError::Storage(e) => Self::Storage(e),
        }
    }
}

impl VoiceError {
    /// `invalid_params`, `voice_unavailable`, `voice_failed`, `quota_exceeded`
    /// or `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidParams(_) => "invalid_params",
            Self::Unavailable(_) => "voice_unavailable",
            Self::Failed(_) => "voice_failed",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::Db(_) | Self::Storage(_) => "internal",
        }
    }

    /// The `{code, message}` of a `reply.error`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().into(),
            message: self.to_string(),
        }
    }
}

/// Text to speech for every user of this router.
#[derive(Clone)]
pub struct Voice {
    engine: Option<Arc<dyn Engine>>,
    db: PgPool,
    storage: Storage,
    plans: Arc<Plans>,
    signer: Signer,
    settings: VoiceSettings,
    slots: Arc<super::slots::Slots>,
    metrics: Arc<Metrics>,
}

impl Voice {
    /// The service over `engine` (`None`: speech is off).
    pub fn new(
        engine: Option<Arc<dyn Engine>>,
        db: PgPool,
        storage: Storage,
        plans: Arc<Plans>,
        signer: Signer,
        settings: VoiceSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            db,
            storage,
            plans,
            signer,
            settings,
            slots: Arc::new(super::slots::Slots::new(PARALLEL_SYNTHESES)),
            metrics,
        }
    }

    /// The URL signer (the audio route checks with it).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The plans (their voice and storage limits).
    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    /// The settings.
    pub fn settings(&self) -> &VoiceSettings {
        &self.settings
    }

    /// Whether an engine is configured (speech is on).
    pub fn has_engine(&self) -> bool {
        self.engine.is_some()
    }

    /// Whether `user`'s plan includes voice and an engine is configured.
    pub async fn available_to(&self, user: Uuid) -> Result<bool, sqlx::Error> {
        Ok(self.engine.is_some() && self.plan_has_voice(user).await?)
    }

    async fn plan_has_voice(&self, user: Uuid) -> Result<bool, sqlx::Error> {
        // language=PostgreSQL
        let tier: Option<(String,)> = crate::db::query_as("select tier from users where id = $1")
            .bind(user)
            .fetch_optional(&self.db)
            .await?;
        Ok(tier.is_some_and(|(tier,)| self.plans.get(crate::plans::Tier::parse(&tier)).voice))
    }

    /// Speaks `text` for `user`: stored audio and its signed URL.
    #[tracing::instrument(skip(self, text), fields(user.id = %user))]
    pub async fn speak(&self, user: Uuid, text: &str) -> Result<Spoken, VoiceError> {
        let result = self.speak_inner(user, text).await;
        match &result {
            Ok(spoken) => {
                tracing::debug!(file.id = %spoken.id, duration_ms = ?spoken.duration_ms, "spoke")
            }
            Err(e @ (VoiceError::Db(_) | VoiceError::Storage(_))) => {
                tracing::error!(error = ?e, "storing speech failed")
            }
            Err(e) => tracing::info!(code = e.code(), error = %e, "speech refused or failed"),
        }
        result
    }

    async fn speak_inner(&self, user: Uuid, text: &str) -> Result<Spoken, VoiceError> {
        let (spoken_text, transcript) = prepare(text, self.settings.max_chars)?;
        let Some(engine) = &self.engine else {
            return Err(VoiceError::Unavailable(
                "spoken answers are turned off on this server (JARVIS_TTS_ENGINE=off)".into(),
            ));
        };
        if !self.plan_has_voice(user).await? {
            return Err(VoiceError::Unavailable(
                "your plan does not include spoken answers; the text answer is unaffected".into(),
            ));
        }
        // Audio is stored for the user, so it counts against their storage.
        let room = crate::quota::room(&self.db, &self.storage, &self.plans, user).await?;
        if room.left() == Some(0) {
            return Err(VoiceError::QuotaExceeded(room.full_message()));
        }
        let timeout = self.settings.timeout;
        let synthesis = async {
            // One slot per user at most, so one user's burst cannot hold them all.
            let _slot = self.slots.acquire(user).await;
            engine.synthesize(&spoken_text).await
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(timeout, synthesis).await;
        let labels = VoiceLabels {
            engine: engine.name().into(),
            outcome: match &outcome {
                Ok(Ok(_)) => "ok",
                Ok(Err(_)) => "failed",
                Err(_) => "timeout",
            }
            .into(),
        };
        self.metrics.voice_syntheses.get_or_create(&labels).inc();
        self.metrics
            .voice_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        let speech = match outcome {
            Ok(Ok(speech)) => speech.sniffed(),
            Ok(Err(error)) => {
                tracing::warn!(engine = engine.name(), %error, "synthesis failed");
                return Err(VoiceError::Failed(format!(
                    "the voice engine ({}) failed, so this part is not spoken: {error}",
                    engine.name()
                )));
            }
            Err(_) => {
                return Err(VoiceError::Failed(format!(
                    "the voice engine ({}) did not answer within {} s, so this part is not spoken",
                    engine.name(),
                    timeout.as_secs_f32()
                )));
            }
        };
        if !room.fits(speech.bytes.len() as u64, 0) {
            return Err(VoiceError::QuotaExceeded(room.full_message()));
        }
        let id = Uuid::new_v4();
        let path = format!("voice/{id}.{}", speech.extension());
        let key = format!("users/{user}/{path}");
        let size = speech.bytes.len() as i64;
        let sha256 = Sha256::digest(&speech.bytes).to_vec();
        self.storage.put(&key, speech.bytes.clone()).await?;
        if let Err(error) = self
            .record(user, id, &path, &key, size, speech.content_type, sha256)
            .await
        {
            // Never an object without its row.
            if let Err(e) = self.storage.delete(&key).await {
                tracing::warn!(error = %e, "removing unrecorded speech failed");
            }
            return Err(error.into());
        }
        Ok(Spoken {
            id,
            url: self.signer.url(id, user),
            transcript,
            content_type: speech.content_type.into(),
            duration_ms: speech.duration_ms,
        })
    }

    #[expect(clippy::too_many_arguments, reason = "one row's columns")]
    async fn record(
        &self,
        user: Uuid,
        id: Uuid,
        path: &str,
        key: &str,
        size: i64,
        content_type: &str,
        sha256: Vec<u8>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = db::user_tx(&self.db, user).await?;
        // language=PostgreSQL
        crate::db::query(
            "insert into files (id, owner_id, kind, path, storage_key, size, content_type, sha256)
             values ($1, $2, 'voice', $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(user)
        .bind(path)
        .bind(key)
        .bind(size)
        .bind(content_type)
        .bind(sha256)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

/// The text to speak and its transcript: control characters become spaces,
/// runs of whitespace one space; empty or wordless text is refused; text over
/// `max_chars` is cut at a word boundary and the transcript says so.
pub fn prepare(text: &str, max_chars: usize) -> Result<(String, String), VoiceError> {
    let total = text.chars().count();
    if total > MAX_INPUT_CHARS {
        return Err(VoiceError::InvalidParams(format!(
            "text is {total} characters; speak at most {MAX_INPUT_CHARS} (longer answers are cut at {max_chars})"
        )));
    }
    let cleaned = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if cleaned.is_empty() {
        return Err(VoiceError::InvalidParams("text is empty".into()));
    }
    if !cleaned.chars().any(char::is_alphanumeric) {
        return Err(VoiceError::InvalidParams(
            "text has no words to speak".into(),
        ));
    }
    if cleaned.chars().count() <= max_chars {
        return Ok((cleaned.clone(), cleaned));
    }
    let mut cut: String = cleaned.chars().take(max_chars).collect();
    if let Some(space) = cut.rfind(' ').filter(|at| *at > 0) {
        cut.truncate(space);
    }
    let transcript = format!("{cut}{CUT_NOTE}");
    Ok((format!("{cut}. The rest is in the text."), transcript))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cleaned_and_bad_text_refused() {
        let (spoken, transcript) = prepare("Hello\u{0}\u{7}  there\n\tfriend", 100).expect("ok");
        assert_eq!(spoken, "Hello there friend");
        assert_eq!(transcript, spoken);
        for bad in ["", "   \n\t", "\u{0}\u{1b}", "!!! ... ???"] {
            let error = prepare(bad, 100).expect_err(bad);
            assert_eq!(error.code(), "invalid_params", "{bad:?}");
        }
        let huge = "a ".repeat(MAX_INPUT_CHARS);
        let error = prepare(&huge, 100).expect_err("huge");
        assert!(error.to_string().contains("at most"), "{error}");
    }

    #[test]
    fn long_text_is_cut_at_a_word_and_the_transcript_says_so() {
        let (spoken, transcript) = prepare("one two three four five", 12).expect("ok");
        assert_eq!(spoken, "one two. The rest is in the text.");
        assert_eq!(transcript, format!("one two{CUT_NOTE}"));
    }
}
