//! How a turn is stored: the router that takes a browser's message
//! opens the turn's rows ([`open_turn`]), takes them back when the sandbox refuses
//! the message ([`discard_turn`]), and the sandbox pushes the turn's numbered
//! events over HTTP, stored batch by batch ([`store_events`]).
//!
//! Storing is idempotent by (conversation, `seq`): each batch runs in one short
//! transaction that locks the conversation row first, so a retried batch, or the
//! same batch stored by two routers at once, is written exactly once.

use sandbox::protocol::SandboxFrame;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::{Outcome, TranscriptError, browser_event, conversation_and_seq, title};
use crate::db;

/// The rows [`open_turn`] made for one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTurn {
    /// The conversation (made by this turn when `created_conversation`).
    pub conversation_id: Uuid,
    /// The user's message.
    pub user_message_id: Uuid,
    /// The empty, incomplete assistant message the turn's events are stored in:
    /// the `message_id` of the `message` frame sent to the sandbox.
    pub message_id: Uuid,
    /// This turn made the conversation (it was new).
    pub created_conversation: bool,
    /// The conversation's highest stored `seq` when the turn opened.
    pub last_seq: u64,
    /// The user's plan (`users.tier`) when the turn opened.
    pub tier: crate::plans::Tier,
    /// The user's `voice_answers` setting when the turn opened.
    pub voice_answers: bool,
}

/// The user's message a turn opens with.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// What the user wrote.
    pub content: &'a str,
    /// Its events (the uploads it names).
    pub events: Value,
    /// A user message of the conversation this one takes the place of, with every
    /// message after it (regenerate, edit and resend).
    pub replaces: Option<Uuid>,
}

impl<'a> NewMessage<'a> {
    /// A message of text alone, replacing nothing.
    pub fn text(content: &'a str) -> Self {
        Self {
            content,
            events: Value::Array(Vec::new()),
            replaces: None,
        }
    }
}

/// What [`store_events`] did with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreOutcome {
    /// The conversation's highest stored `seq` after the batch.
    pub last_seq: u64,
    /// The batch ended the turn: `done` (complete) or a numbered `error` (incomplete).
    pub ended: Option<Outcome>,
    /// Events stored by this call.
    pub stored: usize,
    /// Events already stored (`seq` at or below the stored `last_seq`), skipped.
    pub duplicates: usize,
    /// Events not stored for another reason: unnumbered, of another conversation,
    /// with no assistant message in the conversation to hold them, or after the
    /// end of their answer's turn.
    pub ignored: usize,
}

/// Stores the user's message (`events` on it: the uploads it names) and an empty,
/// incomplete assistant message in one transaction, creating the conversation
/// (titled from `content`) when `conversation_id` is new. With `replaces`, that
/// user message and every message after it are hidden (`superseded_by` the new
/// one). Fails with [`TranscriptError::NotYours`] when the id is another user's
/// conversation, with [`TranscriptError::CannotReplace`] when `replaces` is not a
/// current user message of it; either changes nothing.
///
/// The database sees three round trips (`BEGIN` with the user's settings, one
/// statement, `COMMIT`); a turn that replaces messages one more: its second
/// statement runs after the conversation's row lock is held, so it sees what a
/// turn opened before it in the same conversation changed. The same statement
/// reads the user's plan and voice setting ([`OpenTurn::tier`],
/// [`OpenTurn::voice_answers`]), which the turn's frame needs.
pub async fn open_turn(
    db: &PgPool,
    user_id: Uuid,
    conversation_id: Uuid,
    message: NewMessage<'_>,
) -> Result<OpenTurn, TranscriptError> {
    let NewMessage {
        content,
        events,
        replaces,
    } = message;
    let mut tx = db::user_tx(db, user_id).await?;
    // The upsert locks the conversation's row (waiting for a turn being opened in
    // it) and reads its latest `last_seq`, also when another tab made the
    // conversation a moment ago. Another user's row fails the update policy of
    // row-level security (an error, SQLSTATE 42501) or, without it, the `where`:
    // no row. The messages are inserted from the rows before them, so the user's
    // message comes first (`position`).
    // language=PostgreSQL
    let upsert = "insert into conversations as c (id, owner_id, title) values ($1, $2, $3)
         on conflict (id) do update set updated_at = now() where c.owner_id = $2
         returning c.last_seq, c.xmax = 0 as created";
    let opened: sqlx::Result<Option<OpenedRow>> = match replaces {
        // language=PostgreSQL
        None => {
            crate::db::query_as(&format!(
                "with conv as ({upsert}),
             asked as (
                 insert into messages (owner_id, conversation_id, role, content, events)
                 select $2, $1, 'user', $4, $5 from conv returning id),
             answer as (
                 insert into messages (owner_id, conversation_id, role, complete)
                 select $2, $1, 'assistant', false from asked returning id)
             select conv.last_seq, conv.created, u.tier, u.voice_answers, asked.id, answer.id
             from users u, conv, asked, answer where u.id = $2"
            ))
            .bind(conversation_id)
            .bind(user_id)
            .bind(title(content))
            .bind(content)
            .bind(&events)
            .fetch_optional(&mut *tx)
            .await
        }
        // language=PostgreSQL
        Some(_) => {
            crate::db::query_as(&format!(
                "with conv as ({upsert})
             select conv.last_seq, conv.created, u.tier, u.voice_answers,
                    null::uuid, null::uuid
             from users u, conv where u.id = $2"
            ))
            .bind(conversation_id)
            .bind(user_id)
            .bind(title(content))
            .fetch_optional(&mut *tx)
            .await
        }
    };
    let (last_seq, created, tier, voice_answers, mut user_message_id, mut message_id) = match opened
    {
        Ok(Some(row)) => row,
        Ok(None) => return Err(TranscriptError::NotYours(conversation_id)),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(RLS_REFUSED) => {
            return Err(TranscriptError::NotYours(conversation_id));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(replaced) = replaces {
        // The replaced message and those after it are hidden behind the new one
        // (which the update does not see: it is of the same statement).
        // language=PostgreSQL
        let ids: Option<(Uuid, Uuid)> = crate::db::query_as(
            "with replaced as (
                 select position from messages where id = $3 and conversation_id = $1
                 and owner_id = $2 and role = 'user' and superseded_by is null),
             asked as (
                 insert into messages (owner_id, conversation_id, role, content, events)
                 select $2, $1, 'user', $4, $5 from replaced returning id),
             hidden as (
                 update messages m set superseded_by = asked.id from asked, replaced
                 where m.conversation_id = $1 and m.owner_id = $2
                   and m.position >= replaced.position and m.superseded_by is null),
             answer as (
                 insert into messages (owner_id, conversation_id, role, complete)
                 select $2, $1, 'assistant', false from asked returning id)
             select asked.id, answer.id from asked, answer",
        )
        .bind(conversation_id)
        .bind(user_id)
        .bind(replaced)
        .bind(content)
        .bind(&events)
        .fetch_optional(&mut *tx)
        .await?;
        let (asked, answer) = ids.ok_or(TranscriptError::CannotReplace(replaced))?;
        (user_message_id, message_id) = (Some(asked), Some(answer));
    }
    let (Some(user_message_id), Some(message_id)) = (user_message_id, message_id) else {
        return Err(TranscriptError::Db(sqlx::Error::RowNotFound));
    };
    tx.commit().await?;
    tracing::debug!(user.id = %user_id, conversation.id = %conversation_id, message.id = %message_id, "turn opened");
    Ok(OpenTurn {
        conversation_id,
        user_message_id,
        message_id,
        created_conversation: created,
        last_seq: u64::try_from(last_seq).unwrap_or(0),
        tier: crate::plans::Tier::parse(&tier),
        voice_answers,
    })
}

/// What [`open_turn`]'s statement answers: the conversation's `last_seq`, whether
/// it was made, the user's tier and `voice_answers`, the two messages' ids (none
/// yet when the turn replaces messages).
type OpenedRow = (i64, bool, String, bool, Option<Uuid>, Option<Uuid>);

/// The SQLSTATE of a row-level security refusal (`insufficient_privilege`).
const RLS_REFUSED: &str = "42501";

/// Takes back a turn the sandbox refused: deletes its two messages, and the
/// conversation too when this turn made it and nothing else was stored in it
/// since. Rows that are not `user_id`'s are never touched.
pub async fn discard_turn(
    db: &PgPool,
    user_id: Uuid,
    turn: &OpenTurn,
) -> Result<(), TranscriptError> {
    let mut tx = db::user_tx(db, user_id).await?;
    // The lock orders this after (or before) any other turn opening in the
    // same conversation, so a message of theirs is never deleted with it.
    if lock_conversation(&mut tx, user_id, turn.conversation_id)
        .await?
        .is_none()
    {
        return Ok(());
    }
    // language=PostgreSQL
    crate::db::query(
        "delete from messages where id in ($1, $2) and conversation_id = $3 and owner_id = $4",
    )
    .bind(turn.user_message_id)
    .bind(turn.message_id)
    .bind(turn.conversation_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    if turn.created_conversation {
        // language=PostgreSQL
        crate::db::query(
            "delete from conversations c where c.id = $1 and c.owner_id = $2
             and not exists (select 1 from messages m where m.conversation_id = c.id)",
        )
        .bind(turn.conversation_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    tracing::debug!(user.id = %user_id, conversation.id = %turn.conversation_id, "refused turn discarded");
    Ok(())
}

/// Stores one batch of the sandbox's numbered events of `conversation_id`, in one
/// transaction that holds the conversation's row lock: events at or below the
/// stored `last_seq` are skipped (so a retried batch changes nothing), text deltas
/// are appended to the assistant message's `content`, other events (as the
/// browser saw them) to its `events`; `done` marks it complete with its token
/// counts, a numbered `error` leaves it incomplete; `last_seq` is raised.
///
/// The events go to `message_id` when it is an assistant message of this
/// conversation (a `turn` event naming one switches to it), else to the
/// conversation's newest assistant message. Once an answer's turn ended (`done`
/// or a numbered `error` stored, in this batch or before) nothing more is added
/// to it: later events are ignored until a `turn` event opens the next answer
/// (the one it names, else the conversation's newest). Fails with
/// [`TranscriptError::NotYours`] when the conversation is not `user_id`'s (or
/// does not exist), changing nothing.
pub async fn store_events(
    db: &PgPool,
    user_id: Uuid,
    conversation_id: Uuid,
    message_id: Option<Uuid>,
    events: &[SandboxFrame],
) -> Result<StoreOutcome, TranscriptError> {
    let mut tx = db::user_tx(db, user_id).await?;
    let (stored_seq, first) = lock_with_answer(&mut tx, user_id, conversation_id, message_id)
        .await?
        .ok_or(TranscriptError::NotYours(conversation_id))?;
    let mut plan = Plan::new(conversation_id, stored_seq, first, events);
    while let Some(named) = plan.apply() {
        // A new turn whose answer is another message: what gathered goes to
        // the current one, and the events go on in the next.
        let (current, mut write) = plan.take_write();
        write.flush(&mut tx, user_id, current).await?;
        let next = assistant_message(&mut tx, user_id, conversation_id, named).await?;
        plan.switch_to(next);
    }
    let (outcome, target, mut write, raised) = plan.finish();
    // The last write and the raised `last_seq` go in one statement.
    write
        .flush_and_raise(&mut tx, user_id, target, raised)
        .await?;
    tx.commit().await?;
    logged(user_id, conversation_id, &outcome);
    Ok(outcome)
}

/// Notes what storing one batch did.
pub(super) fn logged(user_id: Uuid, conversation_id: Uuid, outcome: &StoreOutcome) {
    if outcome.ignored > 0 {
        tracing::warn!(user.id = %user_id, conversation.id = %conversation_id, ignored = outcome.ignored, "events not stored: unnumbered, of another conversation, with no assistant message, or after their turn ended");
    }
    tracing::debug!(user.id = %user_id, conversation.id = %conversation_id, ?outcome, "events stored");
}

/// What one batch of events does to a conversation, decided without the
/// database: which events are new (above the stored `last_seq`), what each
/// appends to the answer it goes to, where the turn ends. [`Plan::apply`] goes
/// through the events until one starts a turn whose answer is another message;
/// the caller looks that one up ([`Plan::switch_to`]) and applies on.
pub(super) struct Plan<'e> {
    conversation_id: Uuid,
    stored_seq: u64,
    /// The batch's events of this conversation, by `seq`.
    numbered: Vec<(u64, &'e SandboxFrame)>,
    /// The next of `numbered` to apply.
    next: usize,
    outcome: StoreOutcome,
    target: Option<Answer>,
    write: Write,
}

impl<'e> Plan<'e> {
    /// A plan for `events` of `conversation_id`, whose stored `last_seq` is
    /// `stored_seq` and whose events go to `first` to begin with.
    pub(super) fn new(
        conversation_id: Uuid,
        stored_seq: u64,
        first: Option<Answer>,
        events: &'e [SandboxFrame],
    ) -> Self {
        let mut outcome = StoreOutcome {
            last_seq: stored_seq,
            ..StoreOutcome::default()
        };
        let mut numbered: Vec<(u64, &SandboxFrame)> = Vec::with_capacity(events.len());
        for frame in events {
            match conversation_and_seq(frame) {
                Some((c, seq)) if c.parse::<Uuid>().ok() == Some(conversation_id) => {
                    numbered.push((seq, frame));
                }
                _ => outcome.ignored += 1,
            }
        }
        numbered.sort_by_key(|(seq, _)| *seq);
        Self {
            conversation_id,
            stored_seq,
            numbered,
            next: 0,
            outcome,
            target: first,
            write: Write::default(),
        }
    }

    /// Applies the events in order. Stops at a `turn` event whose answer is not
    /// the current one (the one it names, else, when the current one has ended,
    /// the conversation's newest): answers `Some(named)` then, that event not yet
    /// applied; `None` once every event is applied.
    pub(super) fn apply(&mut self) -> Option<Option<Uuid>> {
        while let Some(&(seq, frame)) = self.numbered.get(self.next) {
            if seq <= self.outcome.last_seq {
                self.outcome.duplicates += 1;
                self.next += 1;
                continue;
            }
            if let SandboxFrame::Turn {
                message_id: named, ..
            } = frame
            {
                let named = named.as_deref().and_then(|n| n.parse::<Uuid>().ok());
                let switch = match named {
                    Some(named) => self.target.is_none_or(|t| t.id != named),
                    None => self.target.is_none_or(|t| t.ended),
                };
                if switch {
                    return Some(named);
                }
            }
            self.next += 1;
            self.place(seq, frame);
        }
        None
    }

    /// The answer written so far and what gathered for it, the plan starting
    /// over with nothing gathered.
    pub(super) fn take_write(&mut self) -> (Option<Uuid>, Write) {
        (self.target.map(|t| t.id), std::mem::take(&mut self.write))
    }

    /// Goes on with `target` as the answer, from the `turn` event
    /// [`Plan::apply`] stopped at.
    pub(super) fn switch_to(&mut self, target: Option<Answer>) {
        self.target = target;
        if let Some(&(seq, frame)) = self.numbered.get(self.next) {
            self.next += 1;
            self.place(seq, frame);
        }
    }

    /// What the batch did, the answer the last events go to, what gathered for
    /// it, and the conversation's new `last_seq` when it rose.
    pub(super) fn finish(self) -> (StoreOutcome, Option<Uuid>, Write, Option<(Uuid, u64)>) {
        let raised = (self.outcome.last_seq > self.stored_seq)
            .then_some((self.conversation_id, self.outcome.last_seq));
        (self.outcome, self.target.map(|t| t.id), self.write, raised)
    }

    /// Applies one new event to the current answer.
    fn place(&mut self, seq: u64, frame: &SandboxFrame) {
        let write = &mut self.write;
        let Some(answer) = self.target.as_mut().filter(|t| !t.ended) else {
            // No answer to hold it, or one whose turn already ended.
            self.outcome.ignored += 1;
            return;
        };
        self.outcome.last_seq = seq;
        self.outcome.stored += 1;
        // Where in the answer's text the event came: the history shows text and
        // tool activity interleaved as they streamed.
        let at = answer.chars + write.text_chars;
        match frame {
            SandboxFrame::Turn { .. } => {}
            SandboxFrame::Text { delta, .. } => {
                write.text.push_str(delta);
                write.text_chars += delta.chars().count() as u64;
            }
            SandboxFrame::Done { usage, stopped, .. } => {
                // A stopped answer says so where it stopped.
                if *stopped {
                    write
                        .events
                        .push(placed(serde_json::json!({"type": "stopped"}), at));
                }
                write.done = Some((usage.input_tokens, usage.output_tokens));
                self.outcome.ended = Some(Outcome::Complete);
                answer.ended = true;
            }
            SandboxFrame::Error { .. } => {
                write.events.push(placed(browser_event(frame), at));
                self.outcome.ended = Some(Outcome::Incomplete);
                answer.ended = true;
            }
            _ => write.events.push(placed(browser_event(frame), at)),
        }
    }
}

/// Locks `conversation_id`'s row if it is `user_id`'s and answers its `last_seq`.
/// The row is updated (to what it was), not only locked: a batch whose lock
/// waited for this transaction then knows the messages may have changed
/// ([`lock_with_answer`]).
async fn lock_conversation(
    tx: &mut Transaction<'static, Postgres>,
    user_id: Uuid,
    conversation_id: Uuid,
) -> sqlx::Result<Option<u64>> {
    // language=PostgreSQL
    let last_seq: Option<i64> = crate::db::query_scalar(
        "update conversations set last_seq = last_seq where id = $1 and owner_id = $2
         returning last_seq",
    )
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(last_seq.map(|s| u64::try_from(s).unwrap_or(0)))
}

/// An assistant message events are stored in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    id: Uuid,
    /// Its turn ended (`done` or a numbered `error` stored): nothing more is added.
    ended: bool,
    /// Characters of its stored `content`.
    chars: u64,
}

/// `event` with `at`: the number of characters of the answer's text before it.
fn placed(mut event: Value, at: u64) -> Value {
    if let Some(object) = event.as_object_mut() {
        object.insert("at".into(), Value::from(at));
    }
    event
}

/// `wanted` when it is an assistant message of the conversation, else the
/// conversation's newest assistant message; `None` when it has none.
async fn assistant_message(
    tx: &mut Transaction<'static, Postgres>,
    user_id: Uuid,
    conversation_id: Uuid,
    wanted: Option<Uuid>,
) -> sqlx::Result<Option<Answer>> {
    // language=PostgreSQL
    let found: Option<(Uuid, bool, i64)> = crate::db::query_as(&format!(
        "select {ANSWER_COLUMNS} from messages
         where conversation_id = $1 and owner_id = $2 and role = 'assistant'
         order by (id is not distinct from $3) desc, position desc limit 1"
    ))
    .bind(conversation_id)
    .bind(user_id)
    .bind(wanted)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(answer(user_id, conversation_id, wanted, found))
}

/// What [`Answer`] is read from: the id, whether its turn ended (only numbered
/// errors are stored in `events`, and each ends its turn), its text's length.
const ANSWER_COLUMNS: &str =
    "id, complete or events @> '[{\"type\":\"error\"}]', char_length(content)::bigint";

/// The [`Answer`] of a row of [`ANSWER_COLUMNS`] (saying so when it is not the one
/// `wanted`).
pub(super) fn answer(
    user_id: Uuid,
    conversation_id: Uuid,
    wanted: Option<Uuid>,
    found: Option<(Uuid, bool, i64)>,
) -> Option<Answer> {
    if let Some(wanted) = wanted
        && found.is_none_or(|(id, _, _)| id != wanted)
    {
        tracing::warn!(user.id = %user_id, conversation.id = %conversation_id, message.id = %wanted, "events name a message that is not this conversation's answer; storing them in its newest answer");
    }
    found.map(|(id, ended, chars)| Answer {
        id,
        ended,
        chars: u64::try_from(chars).unwrap_or(0),
    })
}

/// [`lock_conversation`] and [`assistant_message`] in one statement: the
/// conversation's `last_seq` and the answer events go to. The answer is read
/// from the statement's snapshot; when the lock had to wait for another
/// transaction that changed the conversation (a batch stored, a turn opened)
/// that snapshot is stale, and the answer is read again.
async fn lock_with_answer(
    tx: &mut Transaction<'static, Postgres>,
    user_id: Uuid,
    conversation_id: Uuid,
    wanted: Option<Uuid>,
) -> sqlx::Result<Option<(u64, Option<Answer>)>> {
    // `c` is the latest version of the row (the lock waits for it); the
    // subquery's `xmin` the one of the snapshot: equal when nothing changed it.
    // language=PostgreSQL
    let row: Option<LockedRow> = crate::db::query_as(&format!(
        "select c.last_seq,
                c.xmin is not distinct from (select xmin from conversations where id = $1),
                a.*
         from conversations c left join lateral (
             select {ANSWER_COLUMNS} from messages
             where conversation_id = c.id and owner_id = $2 and role = 'assistant'
             order by (id is not distinct from $3) desc, position desc limit 1
         ) a on true
         where c.id = $1 and c.owner_id = $2 for update of c"
    ))
    .bind(conversation_id)
    .bind(user_id)
    .bind(wanted)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((last_seq, fresh, id, ended, chars)) = row else {
        return Ok(None);
    };
    let last_seq = u64::try_from(last_seq).unwrap_or(0);
    let target = if fresh {
        let found = id.map(|id| (id, ended.unwrap_or(false), chars.unwrap_or(0)));
        answer(user_id, conversation_id, wanted, found)
    } else {
        assistant_message(tx, user_id, conversation_id, wanted).await?
    };
    Ok(Some((last_seq, target)))
}

/// A row of [`lock_with_answer`]'s statement.
type LockedRow = (i64, bool, Option<Uuid>, Option<bool>, Option<i64>);

/// What one batch appends to one message.
#[derive(Default)]
pub(super) struct Write {
    text: String,
    /// Characters of `text`.
    text_chars: u64,
    events: Vec<Value>,
    /// The turn's end: its input and output tokens.
    done: Option<(u64, u64)>,
}

impl Write {
    /// Appends what gathered to `message` (if any) and starts over.
    async fn flush(
        &mut self,
        tx: &mut Transaction<'static, Postgres>,
        user_id: Uuid,
        message: Option<Uuid>,
    ) -> sqlx::Result<()> {
        self.flush_and_raise(tx, user_id, message, None).await
    }

    /// [`Write::flush`], and in the same statement, with `raised`, sets that
    /// conversation's `last_seq`.
    async fn flush_and_raise(
        &mut self,
        tx: &mut Transaction<'static, Postgres>,
        user_id: Uuid,
        message: Option<Uuid>,
        raised: Option<(Uuid, u64)>,
    ) -> sqlx::Result<()> {
        let write = std::mem::take(self);
        let writes = message.is_some() && !write.is_empty();
        if !writes && raised.is_none() {
            return Ok(());
        }
        let (input, output) = match write.done {
            Some((i, o)) => (Some(clamp(i)), Some(clamp(o))),
            None => (None, None),
        };
        // An answer that ends with nothing in it was stopped before its first
        // word: it is marked so (`{"type":"stopped"}`), not kept as an empty answer.
        // language=PostgreSQL
        crate::db::query(
            "with written as (
                 update messages set content = content || $3,
                     events = case when $5 and content || $3 = '' and events || $4 = '[]'::jsonb
                         then '[{\"type\":\"stopped\"}]'::jsonb else events || $4 end,
                     complete = complete or $5,
                     input_tokens = coalesce($6, input_tokens), output_tokens = coalesce($7, output_tokens)
                 where $8 and id = $1 and owner_id = $2)
             update conversations set last_seq = $10
             where $9::uuid is not null and id = $9 and owner_id = $2",
        )
        .bind(message)
        .bind(user_id)
        .bind(&write.text)
        .bind(Json(&write.events))
        .bind(write.done.is_some())
        .bind(input)
        .bind(output)
        .bind(writes)
        .bind(raised.map(|(conversation, _)| conversation))
        .bind(raised.map_or(0, |(_, seq)| clamp(seq)))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

impl Write {
    /// Whether anything gathered for the answer.
    fn is_empty(&self) -> bool {
        self.text.is_empty() && self.events.is_empty() && self.done.is_none()
    }

    /// What [`Write::flush_and_raise`] would do, as an element of
    /// `write_answers` (migration 0017); `None` when it would do nothing.
    pub(super) fn as_element(
        &self,
        user_id: Uuid,
        message: Option<Uuid>,
        raised: Option<(Uuid, u64)>,
    ) -> Option<Value> {
        let message = message.filter(|_| !self.is_empty());
        if message.is_none() && raised.is_none() {
            return None;
        }
        Some(serde_json::json!({
            "user_id": user_id,
            "message_id": message,
            "text": self.text,
            "events": self.events,
            "done": self.done.is_some(),
            "input_tokens": self.done.map(|(i, _)| clamp(i)),
            "output_tokens": self.done.map(|(_, o)| clamp(o)),
            "conversation_id": raised.map(|(conversation, _)| conversation),
            "last_seq": raised.map(|(_, seq)| clamp(seq)),
        }))
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
