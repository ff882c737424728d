//! The proxy's seams to the rest of the router: a turn's rows (`crate::transcript`)
//! and the sync of workspace files after a turn (`crate::sync`). Each is one small
//! function, so the relay in `proxy.rs` never learns how they work.

use std::sync::Arc;

use sandbox::protocol::ErrorBody;
use serde_json::Value;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::{storage::Storage, transcript, workspaces::Backend};

/// The router's services the proxy and the registry use.
pub struct Context {
    /// The database.
    pub db: PgPool,
    /// Opens turns' rows, batching those that arrive together.
    pub turns: transcript::Opener,
    /// Stores the events sandboxes push, batching those that arrive together.
    pub events: transcript::Writer,
    /// Object storage (workspace files, agent state).
    pub storage: Storage,
    /// Text to speech, for `speak` calls.
    pub voice: crate::voice::Voice,
    /// Where sandboxes run.
    pub backend: Arc<dyn Backend>,
    /// The workspace quota a sync applies (see [`Context::sync_limits`]).
    pub workspace_limits: crate::sync::Limits,
    /// Longest one sync may take (or wait for its lock) before it is cancelled.
    pub sync_timeout: std::time::Duration,
}

/// The `code` of the `error` frame that refuses a `replaces` naming no current
/// user message of the conversation.
pub const CANNOT_REPLACE: &str = "cannot_replace";
/// The `code` of the `error` frame that tells a user their workspace is over its quota.
pub const WORKSPACE_OVER_QUOTA: &str = "workspace_over_quota";
/// The `code` of the `error` frame that tells a user the store refused files of
/// their workspace (a size limit, a name it does not take).
pub const STORAGE_REFUSED: &str = "storage_refused";
/// The `code` of the `error` frame that tells a user their plan's storage is full.
pub const STORAGE_QUOTA_EXCEEDED: &str = "quota_exceeded";

impl Context {
    /// The sync's caps: the workspace quota, with `user`'s storage quota as it is
    /// now (`crate::quota`): what the agent wrote counts like everything else the
    /// user stores.
    pub async fn sync_limits(
        &self,
        user: Uuid,
    ) -> Result<crate::sync::Limits, crate::quota::QuotaError> {
        let room = crate::quota::room(&self.db, &self.storage, self.voice.plans(), user).await?;
        Ok(crate::sync::Limits {
            room: Some(room),
            ..self.workspace_limits.clone()
        })
    }
}

/// Opens a turn's rows: the user's message (with the uploads it names), then an
/// empty assistant message the sandbox stores the answer in; with `replaces`,
/// in the place of that user message and those after it. A conversation id of
/// another user is refused as if it did not exist.
pub(super) async fn start_turn(
    ctx: &Context,
    user: Uuid,
    conversation_id: &str,
    (content, attachments): (&str, &[crate::uploads::Attachment]),
    replaces: Option<Uuid>,
) -> Result<transcript::OpenTurn, ErrorBody> {
    let Ok(conversation) = conversation_id.parse::<Uuid>() else {
        return Err(body("bad_conversation_id", "conversation_id is not a UUID"));
    };
    let events: Vec<Value> = attachments
        .iter()
        .map(|a| serde_json::json!({"type": "attachment", "id": a.id, "filename": a.filename, "path": a.path}))
        .collect();
    let message = transcript::NewMessage {
        content,
        events: Value::Array(events),
        replaces,
    };
    let started = std::time::Instant::now();
    let opened = ctx
        .turns
        .open(user, conversation, message)
        .instrument(tracing::debug_span!("open_turn", user.id = %user))
        .await;
    crate::metrics::turn_db("open_turn", started.elapsed());
    match opened {
        Ok(open) => Ok(open),
        Err(transcript::TranscriptError::NotYours(_)) => {
            Err(body("not_found", "no such conversation; start a new one"))
        }
        Err(transcript::TranscriptError::CannotReplace(_)) => Err(body(
            CANNOT_REPLACE,
            "that message is no longer in this conversation; reload it and try again",
        )),
        Err(transcript::TranscriptError::Db(error)) => {
            tracing::error!(user.id = %user, %error, "storing the message failed");
            Err(body(
                "internal",
                "your message could not be stored; try again",
            ))
        }
    }
}

/// After a turn: stores what the agent wrote in the workspace (new and changed
/// files become `files` rows and objects), when the backend's files are local.
/// Past the workspace quota, the user's browsers get an `error` frame
/// ([`WORKSPACE_OVER_QUOTA`]) saying so. A sync (or its wait for the lock) that
/// takes longer than `sync_timeout` is cancelled and logged: what it had not
/// stored yet is stored by the next one.
pub async fn sync_after_turn(hub: &super::Hub) {
    let (ctx, user) = (&hub.ctx, hub.user);
    let Some(dirs) = ctx.backend.host_dirs(user) else {
        return;
    };
    let sync = async {
        let _one_at_a_time = hub.sync.lock().await;
        let limits = ctx
            .sync_limits(user)
            .await
            .map_err(crate::sync::SyncError::Quota)?;
        let report =
            crate::sync::save_workspace_with(&ctx.storage, &ctx.db, user, &dirs.workspace, &limits)
                .await?;
        Ok::<_, crate::sync::SyncError>((report, limits))
    };
    match tokio::time::timeout(ctx.sync_timeout, sync).await {
        Ok(Ok((report, limits))) => {
            tracing::debug!(user.id = %user, ?report, "workspace synced");
            if let Some(over) = report.workspace_quota {
                tracing::warn!(user.id = %user, ?report, "workspace over its quota");
                tell(hub, WORKSPACE_OVER_QUOTA, &over.message(&limits));
            }
            if report.refused > 0 {
                let files = report.refused;
                tell(
                    hub,
                    STORAGE_REFUSED,
                    &format!(
                        "{files} new or changed file{} in your workspace could not be saved                          (the store refused {}); it stays in your workspace and is tried again                          after the next answer",
                        if files == 1 { "" } else { "s" },
                        if files == 1 { "it" } else { "them" }
                    ),
                );
            }
            if report.over_quota > 0 {
                let files = report.over_quota;
                tell(
                    hub,
                    STORAGE_QUOTA_EXCEEDED,
                    &format!(
                        "{files} new or changed file{} in your workspace could not be saved: \
                         your plan's storage is full (delete files or upgrade your plan)",
                        if files == 1 { "" } else { "s" }
                    ),
                );
            }
        }
        // Nothing is lost: the files stay in the workspace for the next sync.
        Ok(Err(error)) => tracing::warn!(user.id = %user, %error, "workspace sync failed"),
        Err(_) => tracing::error!(
            user.id = %user,
            timeout_ms = ctx.sync_timeout.as_millis() as u64,
            "the workspace sync took longer than JARVIS_SLEEP_TIMEOUT: cancelled; \
             what it had not stored is stored by the next sync"
        ),
    }
}

/// Sends every browser of `hub`'s user an `error` frame outside any turn.
fn tell(hub: &super::Hub, code: &str, message: &str) {
    let text: Arc<str> = serde_json::json!({"type": "error", "code": code, "message": message})
        .to_string()
        .into();
    hub.send_to_all(&text);
}

fn body(code: &str, message: &str) -> ErrorBody {
    ErrorBody {
        code: code.into(),
        message: message.into(),
    }
}
