//! Conversations stored as they stream (`router::transcript`): what the browser
//! saw is what is stored; a turn cut off keeps what arrived, marked incomplete;
//! users' turns never mix.

use std::time::Duration;

use router::transcript::{self, Outcome, TranscriptError, Turn};
use sandbox::protocol::{SandboxFrame, Usage};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

async fn user(db: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar("insert into users (email, password_hash) values ($1, 'x') returning id")
        .bind(email)
        .fetch_one(db)
        .await
        .expect("user inserted")
}

async fn start(db: &PgPool, user: Uuid, conversation: Uuid, content: &str) -> Turn {
    tokio::time::timeout(WAIT, Turn::start(db, user, conversation, content))
        .await
        .expect("start in time")
        .expect("turn starts")
}

async fn finish(turn: Turn) -> Outcome {
    tokio::time::timeout(WAIT, turn.finish())
        .await
        .expect("finish in time")
}

/// The frames of a turn in `conversation`, numbered from `first`.
struct Frames {
    conversation: String,
    seq: u64,
}

impl Frames {
    fn new(conversation: Uuid, first: u64) -> Self {
        Self {
            conversation: conversation.to_string(),
            seq: first - 1,
        }
    }
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
    fn turn(&mut self) -> SandboxFrame {
        SandboxFrame::Turn {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            message_id: None,
        }
    }
    fn text(&mut self, delta: &str) -> SandboxFrame {
        SandboxFrame::Text {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            delta: delta.into(),
        }
    }
    fn tool_use(&mut self) -> SandboxFrame {
        SandboxFrame::ToolUse {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            id: "toolu_1".into(),
            name: "Write".into(),
            input: json!({"file_path": "/workspace/a.py", "content": "print(1)"}),
        }
    }
    fn tool_result(&mut self) -> SandboxFrame {
        SandboxFrame::ToolResult {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            id: "toolu_1".into(),
            is_error: false,
            content: "File created".into(),
        }
    }
    fn document(&mut self) -> SandboxFrame {
        SandboxFrame::Document {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            id: Uuid::nil().to_string(),
            filename: "plan.md".into(),
        }
    }
    fn done(&mut self, input: u64, output: u64) -> SandboxFrame {
        SandboxFrame::Done {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
            },
        }
    }
    fn error(&mut self) -> SandboxFrame {
        SandboxFrame::Error {
            seq: Some(self.next()),
            conversation_id: Some(self.conversation.clone()),
            code: "agent_crashed".into(),
            message: "the agent stopped".into(),
            message_id: None,
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    role: String,
    content: String,
    events: Value,
    complete: bool,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
}

async fn messages(db: &PgPool, conversation: Uuid) -> Vec<Row> {
    sqlx::query_as(
        "select role, content, events, complete, input_tokens, output_tokens from messages
         where conversation_id = $1 order by position",
    )
    .bind(conversation)
    .fetch_all(db)
    .await
    .expect("messages")
}

async fn conversation(db: &PgPool, id: Uuid) -> (Uuid, String, i64) {
    sqlx::query_as("select owner_id, title, last_seq from conversations where id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .expect("conversation")
}

/// The browser's view of an event (what the router relays, minus `conversation_id`).
fn seen(frame: &SandboxFrame) -> Value {
    let mut v = serde_json::to_value(frame).expect("json");
    v.as_object_mut().expect("object").remove("conversation_id");
    v
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_finished_turn_stores_exactly_what_the_browser_saw(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let c = Uuid::new_v4();
    let turn = start(&db, u, c, "Write a script\nthat prints one").await;
    let mut f = Frames::new(c, 1);
    let frames = vec![
        f.turn(),
        f.text("Sure, "),
        f.text("writing it."),
        f.tool_use(),
        f.tool_result(),
        f.document(),
        f.text(" Done — héllo ✓"),
        f.done(120, 45),
    ];
    for frame in &frames {
        turn.record(frame);
    }
    assert_eq!(finish(turn).await, Outcome::Complete);

    let rows = messages(&db, c).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].role, "user");
    assert_eq!(rows[0].content, "Write a script\nthat prints one");
    assert_eq!(rows[1].role, "assistant");
    assert_eq!(rows[1].content, "Sure, writing it. Done — héllo ✓");
    assert_eq!(
        rows[1].events,
        json!([seen(&frames[3]), seen(&frames[4]), seen(&frames[5])])
    );
    assert!(rows[1].complete);
    assert_eq!(
        (rows[1].input_tokens, rows[1].output_tokens),
        (Some(120), Some(45))
    );
    let (owner, title, last_seq) = conversation(&db, c).await;
    assert_eq!(owner, u);
    assert_eq!(title, "Write a script that prints one");
    assert_eq!(last_seq, 8);
    assert_eq!(transcript::last_seq(&db, u, c).await.expect("seq"), Some(8));

    // The next turn continues the conversation and its numbering; replays of
    // events already stored are ignored.
    let turn = start(&db, u, c, "Thanks").await;
    let mut g = Frames::new(c, 9);
    turn.record(&frames[6]); // an old seq, e.g. replayed after a resume
    turn.record(&g.turn());
    turn.record(&g.text("You're welcome."));
    turn.record(&g.done(10, 3));
    assert_eq!(finish(turn).await, Outcome::Complete);
    let rows = messages(&db, c).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3].content, "You're welcome.");
    assert_eq!(rows[3].events, json!([]));
    assert_eq!(conversation(&db, c).await.2, 11);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_turn_cut_off_midway_keeps_the_partial_answer_marked_incomplete(db: PgPool) {
    let u = user(&db, "a@example.com").await;

    // Dropped (browser gone, proxy shutting down) without done or error.
    let c = Uuid::new_v4();
    let turn = start(&db, u, c, "Tell me a long story").await;
    let mut f = Frames::new(c, 1);
    turn.record(&f.turn());
    turn.record(&f.text("Once upon "));
    turn.record(&f.tool_use());
    turn.record(&f.text("a time"));
    drop(turn);
    let rows = tokio::time::timeout(WAIT, async {
        loop {
            let rows = messages(&db, c).await;
            if rows[1].content == "Once upon a time" {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the dropped turn is written");
    assert!(!rows[1].complete);
    assert_eq!(rows[1].events.as_array().map(Vec::len), Some(1));
    assert_eq!(rows[1].input_tokens, None);
    assert_eq!(conversation(&db, c).await.2, 4);

    // Ended by an error event: kept, incomplete, with the error the browser saw.
    let c = Uuid::new_v4();
    let turn = start(&db, u, c, "Again").await;
    let mut f = Frames::new(c, 1);
    turn.record(&f.turn());
    turn.record(&f.text("Partial"));
    let error = f.error();
    turn.record(&error);
    turn.record(&f.text(" never stored"));
    assert_eq!(finish(turn).await, Outcome::Incomplete);
    let rows = messages(&db, c).await;
    assert_eq!(rows[1].content, "Partial");
    assert!(!rows[1].complete);
    assert_eq!(rows[1].events, json!([seen(&error)]));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn streamed_text_is_stored_within_a_second_before_the_turn_ends(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let c = Uuid::new_v4();
    let turn = start(&db, u, c, "Count").await;
    let mut f = Frames::new(c, 1);
    turn.record(&f.turn());
    let mut expected = String::new();
    for i in 0..500 {
        let delta = format!("{i} ");
        expected.push_str(&delta);
        turn.record(&f.text(&delta));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Still streaming: a crash now would lose nothing older than a second.
    let rows = messages(&db, c).await;
    assert_eq!(rows[1].content, expected);
    assert!(!rows[1].complete);
    assert_eq!(conversation(&db, c).await.2, 501);
    turn.record(&f.done(1, 500));
    assert_eq!(finish(turn).await, Outcome::Complete);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn two_users_turns_never_mix(db: PgPool) {
    let a = user(&db, "a@example.com").await;
    let b = user(&db, "b@example.com").await;
    let (ca, cb) = (Uuid::new_v4(), Uuid::new_v4());
    let ta = start(&db, a, ca, "from a").await;
    let tb = start(&db, b, cb, "from b").await;
    let (mut fa, mut fb) = (Frames::new(ca, 1), Frames::new(cb, 1));
    for i in 0..20 {
        ta.record(&fa.text(&format!("a{i} ")));
        tb.record(&fb.text(&format!("b{i} ")));
        // A frame of the other conversation reaching the wrong recorder is ignored.
        ta.record(&fb.text("stray "));
    }
    ta.record(&fa.done(1, 1));
    tb.record(&fb.done(2, 2));
    assert_eq!(finish(ta).await, Outcome::Complete);
    assert_eq!(finish(tb).await, Outcome::Complete);
    let ra = messages(&db, ca).await;
    let rb = messages(&db, cb).await;
    assert!(ra[1].content.starts_with("a0 a1 ") && !ra[1].content.contains('b'));
    assert!(rb[1].content.starts_with("b0 b1 ") && !rb[1].content.contains('a'));
    assert_eq!(conversation(&db, ca).await.0, a);
    assert_eq!(conversation(&db, cb).await.0, b);

    // B cannot add a turn to A's conversation, nor read its seq.
    let stolen = Turn::start(&db, b, ca, "let me in").await;
    assert!(matches!(stolen, Err(TranscriptError::NotYours(id)) if id == ca));
    assert_eq!(messages(&db, ca).await.len(), 2);
    assert_eq!(transcript::last_seq(&db, b, ca).await.expect("query"), None);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_turn_survives_a_router_restart_by_attaching_to_the_incomplete_message(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let other = user(&db, "b@example.com").await;
    let c = Uuid::new_v4();
    let turn = start(&db, u, c, "Long task").await;
    let mut f = Frames::new(c, 1);
    let (t, first) = (f.turn(), f.text("Working… "));
    turn.record(&t);
    turn.record(&first);
    // The old router goes away mid-turn: what arrived is kept, incomplete.
    assert_eq!(finish(turn).await, Outcome::Incomplete);

    assert!(Turn::attach(&db, other, c).await.expect("query").is_none());
    let turn = Turn::attach(&db, u, c)
        .await
        .expect("query")
        .expect("an incomplete answer to continue");
    // The sandbox replays from the start after `resume`; only new events are added.
    turn.record(&t);
    turn.record(&first);
    turn.record(&f.text("finished."));
    turn.record(&f.done(5, 6));
    assert_eq!(finish(turn).await, Outcome::Complete);
    let rows = messages(&db, c).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].content, "Working… finished.");
    assert!(rows[1].complete);
    assert!(
        Turn::attach(&db, u, c).await.expect("query").is_none(),
        "nothing left to continue"
    );
}

async fn count(db: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(db)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_refused_turn_taken_back_leaves_nothing_behind(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let other = user(&db, "b@example.com").await;

    // A new conversation: opened, refused, gone.
    let c = Uuid::new_v4();
    let open = transcript::open_turn(&db, u, c, "Hello there", json!([]))
        .await
        .expect("turn opens");
    assert!(open.created_conversation);
    assert_eq!(open.conversation_id, c);
    let rows = messages(&db, c).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].content, "Hello there");
    assert!(!rows[1].complete);
    // Another user cannot take it back.
    transcript::discard_turn(&db, other, &open)
        .await
        .expect("discard runs");
    assert_eq!(messages(&db, c).await.len(), 2);
    transcript::discard_turn(&db, u, &open)
        .await
        .expect("discarded");
    assert_eq!(
        count(&db, "select count(*) from conversations where id = $1", c).await,
        0
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from messages where conversation_id = $1",
            c
        )
        .await,
        0
    );

    // An existing conversation: only the refused turn's two messages go.
    let c = Uuid::new_v4();
    let first = transcript::open_turn(&db, u, c, "First", json!([]))
        .await
        .expect("turn opens");
    let mut f = Frames::new(c, 1);
    let stored = transcript::store_events(
        &db,
        u,
        c,
        Some(first.message_id),
        &[f.turn(), f.text("Answer"), f.done(1, 1)],
    )
    .await
    .expect("stored");
    assert_eq!(stored.ended, Some(Outcome::Complete));
    let refused = transcript::open_turn(&db, u, c, "Second", json!([]))
        .await
        .expect("turn opens");
    assert!(!refused.created_conversation);
    assert_eq!(refused.last_seq, 3);
    transcript::discard_turn(&db, u, &refused)
        .await
        .expect("discarded");
    let rows = messages(&db, c).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].content.as_str(), rows[1].content.as_str()),
        ("First", "Answer")
    );
    assert_eq!(conversation(&db, c).await.2, 3);

    // Another user's conversation id is refused and not touched.
    let stolen = transcript::open_turn(&db, other, c, "let me in", json!([])).await;
    assert!(matches!(stolen, Err(TranscriptError::NotYours(id)) if id == c));
    assert_eq!(messages(&db, c).await.len(), 2);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_batch_stored_by_two_routers_at_once_is_stored_once(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let c = Uuid::new_v4();
    let open = transcript::open_turn(&db, u, c, "Count", json!([]))
        .await
        .expect("turn opens");
    let mut f = Frames::new(c, 1);
    let mut expected = String::new();
    let mut batch = vec![f.turn()];
    for round in 0..20 {
        // Each round's batch repeats the previous one's events (a retry that grew).
        for i in 0..5 {
            let delta = format!("{round}.{i} ");
            expected.push_str(&delta);
            batch.push(f.text(&delta));
        }
        let (a, b) = tokio::join!(
            transcript::store_events(&db, u, c, Some(open.message_id), &batch),
            transcript::store_events(&db, u, c, Some(open.message_id), &batch),
        );
        let (a, b) = (a.expect("stored"), b.expect("stored"));
        assert_eq!(a.last_seq, f.seq);
        assert_eq!(b.last_seq, f.seq);
        let fresh = if round == 0 { 6 } else { 5 };
        assert_eq!(a.stored + b.stored, fresh, "round {round}");
        assert_eq!(a.duplicates + b.duplicates, 2 * batch.len() - fresh);
    }
    let rows = messages(&db, c).await;
    assert_eq!(rows[1].content, expected);
    assert!(!rows[1].complete);
    assert_eq!(conversation(&db, c).await.2, 101);

    // Another user storing into this conversation changes nothing.
    let other = user(&db, "b@example.com").await;
    let mut g = Frames::new(c, 200);
    let r = transcript::store_events(&db, other, c, Some(open.message_id), &[g.text("x")]).await;
    assert!(matches!(r, Err(TranscriptError::NotYours(id)) if id == c));
    assert_eq!(messages(&db, c).await[1].content, expected);
    assert_eq!(conversation(&db, c).await.2, 101);
}
