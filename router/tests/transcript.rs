//! Conversations stored as the sandbox streams them (`router::transcript`): a turn
//! is opened with `open_turn`, its batches stored with `store_events` (what
//! `POST /v1/workspace/events` calls), a refused one taken back with
//! `discard_turn`. What the browser saw is what is stored, once however often a
//! batch comes; a turn cut off keeps what arrived, marked incomplete; users' turns
//! never mix.

mod common;

use common::frames::{Frames, stored};
use router::transcript::{self, NewMessage, OpenTurn, Outcome, StoreOutcome, TranscriptError};
use sandbox::protocol::SandboxFrame;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

async fn user(db: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar("insert into users (email, password_hash) values ($1, 'x') returning id")
        .bind(email)
        .fetch_one(db)
        .await
        .expect("user inserted")
}

/// Opens a turn as the router does when the browser sends a message.
async fn open(db: &PgPool, user: Uuid, conversation: Uuid, content: &str) -> OpenTurn {
    transcript::open_turn(db, user, conversation, NewMessage::text(content))
        .await
        .expect("turn opens")
}

/// Stores one batch the sandbox pushed for `turn`, as `POST /v1/workspace/events` does.
async fn store(db: &PgPool, user: Uuid, turn: &OpenTurn, events: &[SandboxFrame]) -> StoreOutcome {
    transcript::store_events(
        db,
        user,
        turn.conversation_id,
        Some(turn.message_id),
        events,
    )
    .await
    .expect("batch stored")
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

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_finished_turn_stores_exactly_what_the_browser_saw(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let c = Uuid::new_v4();
    let turn = open(&db, u, c, "Write a **script**\nthat prints one").await;
    assert!(turn.created_conversation);
    assert_eq!(turn.last_seq, 0);
    let mut f = Frames::from(c, 1);
    let frames = [
        f.turn(),
        f.text("Sure, "),
        f.text("writing it."),
        f.tool_use(),
        f.tool_result(),
        f.document(),
        f.text(" Done — héllo ✓"),
        f.done(120, 45),
    ];
    // Pushed in two batches, the way the sandbox's outbox sends them.
    let first = store(&db, u, &turn, &frames[..3]).await;
    assert_eq!((first.stored, first.last_seq, first.ended), (3, 3, None));
    let rest = store(&db, u, &turn, &frames[3..]).await;
    assert_eq!(
        (rest.stored, rest.last_seq, rest.ended),
        (5, 8, Some(Outcome::Complete))
    );

    let rows = messages(&db, c).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].role, "user");
    assert_eq!(rows[0].content, "Write a **script**\nthat prints one");
    assert_eq!(rows[1].role, "assistant");
    assert_eq!(rows[1].content, "Sure, writing it. Done — héllo ✓");
    assert_eq!(
        rows[1].events,
        json!([
            stored(&frames[3], 17),
            stored(&frames[4], 17),
            stored(&frames[5], 17)
        ])
    );
    assert!(
        !rows[1].events.to_string().contains("conversation_id"),
        "{}",
        rows[1].events
    );
    assert!(rows[1].complete);
    assert_eq!(
        (rows[1].input_tokens, rows[1].output_tokens),
        (Some(120), Some(45))
    );
    let (owner, title, last_seq) = conversation(&db, c).await;
    assert_eq!(owner, u);
    assert_eq!(title, "Write a script", "the first line, Markdown stripped");
    assert_eq!(last_seq, 8);

    // The next turn continues the conversation and its numbering; replays of
    // events already stored (an old seq, e.g. after a resume) are skipped.
    let next = open(&db, u, c, "Thanks").await;
    assert!(!next.created_conversation);
    assert_eq!(next.last_seq, 8);
    let mut g = Frames::from(c, 9);
    let r = store(
        &db,
        u,
        &next,
        &[
            frames[6].clone(),
            g.turn(),
            g.text("You're welcome."),
            g.done(10, 3),
        ],
    )
    .await;
    assert_eq!((r.duplicates, r.stored, r.last_seq), (1, 3, 11));
    let rows = messages(&db, c).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1].content, "Sure, writing it. Done — héllo ✓");
    assert_eq!(rows[3].content, "You're welcome.");
    assert_eq!(rows[3].events, json!([]));
    assert!(rows[3].complete);
    assert_eq!(conversation(&db, c).await.2, 11);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_turn_cut_off_midway_keeps_the_partial_answer_marked_incomplete(db: PgPool) {
    let u = user(&db, "a@example.com").await;

    // Its end never comes (the sandbox went away): each batch is readable as soon
    // as it is stored, and what arrived stays, incomplete.
    let c = Uuid::new_v4();
    let turn = open(&db, u, c, "Tell me a long story").await;
    let mut f = Frames::from(c, 1);
    store(&db, u, &turn, &[f.turn(), f.text("Once upon ")]).await;
    let rows = messages(&db, c).await;
    assert_eq!(rows[1].content, "Once upon ");
    assert!(!rows[1].complete);
    let r = store(&db, u, &turn, &[f.tool_use(), f.text("a time")]).await;
    assert_eq!(r.ended, None);
    let rows = messages(&db, c).await;
    assert_eq!(rows[1].content, "Once upon a time");
    assert!(!rows[1].complete);
    assert_eq!(rows[1].events.as_array().map(Vec::len), Some(1));
    assert_eq!(rows[1].input_tokens, None);
    assert_eq!(conversation(&db, c).await.2, 4);

    // Ended by a numbered error: kept, incomplete, with the error the browser saw;
    // nothing after the error is stored, in its batch or a later one.
    let c = Uuid::new_v4();
    let turn = open(&db, u, c, "Again").await;
    let mut f = Frames::from(c, 1);
    let error = {
        let (t, partial, error, after) = (f.turn(), f.text("Partial"), f.error(), f.text(" never"));
        let r = store(&db, u, &turn, &[t, partial, error.clone(), after]).await;
        assert_eq!(r.ended, Some(Outcome::Incomplete));
        assert_eq!((r.stored, r.ignored, r.last_seq), (3, 1, 3));
        error
    };
    let r = store(&db, u, &turn, &[f.text(" stored"), f.done(1, 1)]).await;
    assert_eq!((r.stored, r.ignored, r.ended), (0, 2, None));
    let rows = messages(&db, c).await;
    assert_eq!(rows[1].content, "Partial");
    assert!(!rows[1].complete);
    assert_eq!(rows[1].events, json!([stored(&error, 7)]));
    assert_eq!(rows[1].input_tokens, None);
    assert_eq!(conversation(&db, c).await.2, 3);

    // The conversation's next turn is stored in its own answer.
    let next = open(&db, u, c, "Try again").await;
    let mut g = Frames::from(c, 10);
    let r = store(&db, u, &next, &[g.turn(), g.text("Whole"), g.done(2, 2)]).await;
    assert_eq!(r.ended, Some(Outcome::Complete));
    let rows = messages(&db, c).await;
    assert_eq!(
        (rows[1].content.as_str(), rows[3].content.as_str()),
        ("Partial", "Whole")
    );
    assert!(!rows[1].complete && rows[3].complete);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn two_users_turns_never_mix(db: PgPool) {
    let a = user(&db, "a@example.com").await;
    let b = user(&db, "b@example.com").await;
    let (ca, cb) = (Uuid::new_v4(), Uuid::new_v4());
    let ta = open(&db, a, ca, "from a").await;
    let tb = open(&db, b, cb, "from b").await;
    let (mut fa, mut fb) = (Frames::from(ca, 1), Frames::from(cb, 1));
    for i in 0..20 {
        let r = store(
            &db,
            a,
            &ta,
            &[fa.text(&format!("a{i} ")), fb.text("stray ")],
        )
        .await;
        // A frame of the other conversation in A's batch is not stored.
        assert_eq!((r.stored, r.ignored), (1, 1));
        store(&db, b, &tb, &[fb.text(&format!("b{i} "))]).await;
    }
    store(&db, a, &ta, &[fa.done(1, 1)]).await;
    store(&db, b, &tb, &[fb.done(2, 2)]).await;
    let ra = messages(&db, ca).await;
    let rb = messages(&db, cb).await;
    assert!(ra[1].content.starts_with("a0 a1 ") && !ra[1].content.contains('b'));
    assert!(rb[1].content.starts_with("b0 b1 ") && !rb[1].content.contains('a'));
    assert!(ra[1].complete && rb[1].complete);
    assert_eq!(conversation(&db, ca).await.0, a);
    assert_eq!(conversation(&db, cb).await.0, b);

    // B can neither add a turn to A's conversation nor store events in it.
    let before = messages(&db, ca).await;
    let stolen = transcript::open_turn(&db, b, ca, NewMessage::text("let me in")).await;
    assert!(matches!(stolen, Err(TranscriptError::NotYours(id)) if id == ca));
    let mut g = Frames::from(ca, 100);
    let stolen = transcript::store_events(
        &db,
        b,
        ca,
        Some(ta.message_id),
        &[g.turn(), g.text("injected"), g.done(1, 1)],
    )
    .await;
    assert!(matches!(stolen, Err(TranscriptError::NotYours(id)) if id == ca));
    let after = messages(&db, ca).await;
    assert_eq!(after.len(), 2);
    assert_eq!(
        (after[0].content.as_str(), after[1].content.as_str()),
        (before[0].content.as_str(), before[1].content.as_str())
    );
    assert_eq!(conversation(&db, ca).await.2, 21);
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
    let open = transcript::open_turn(&db, u, c, NewMessage::text("Hello there"))
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
    let first = transcript::open_turn(&db, u, c, NewMessage::text("First"))
        .await
        .expect("turn opens");
    let mut f = Frames::from(c, 1);
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
    let refused = transcript::open_turn(&db, u, c, NewMessage::text("Second"))
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
    let stolen = transcript::open_turn(&db, other, c, NewMessage::text("let me in")).await;
    assert!(matches!(stolen, Err(TranscriptError::NotYours(id)) if id == c));
    assert_eq!(messages(&db, c).await.len(), 2);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_batch_stored_by_two_routers_or_after_a_restart_is_stored_once(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let c = Uuid::new_v4();
    let open = transcript::open_turn(&db, u, c, NewMessage::text("Count"))
        .await
        .expect("turn opens");
    let mut f = Frames::from(c, 1);
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

    // The router that stored them restarts mid-turn; the sandbox pushes the turn
    // from its start, with its end, to another: only the new events are added.
    let mut whole = batch.clone();
    whole.push(f.text("finished."));
    whole.push(f.done(5, 6));
    let r = store(&db, u, &open, &whole).await;
    assert_eq!(
        (r.stored, r.duplicates, r.ended),
        (2, batch.len(), Some(Outcome::Complete))
    );
    expected.push_str("finished.");
    let rows = messages(&db, c).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].content, expected);
    assert!(rows[1].complete);
    assert_eq!(
        (rows[1].input_tokens, rows[1].output_tokens),
        (Some(5), Some(6))
    );
    assert_eq!(conversation(&db, c).await.2, 103);

    // Another user storing into this conversation changes nothing.
    let other = user(&db, "b@example.com").await;
    let mut g = Frames::from(c, 200);
    let r = transcript::store_events(&db, other, c, Some(open.message_id), &[g.text("x")]).await;
    assert!(matches!(r, Err(TranscriptError::NotYours(id)) if id == c));
    assert_eq!(messages(&db, c).await[1].content, expected);
    assert_eq!(conversation(&db, c).await.2, 103);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn each_stored_event_says_where_in_the_text_it_came(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let c = Uuid::new_v4();
    let turn = open(&db, u, c, "Look it up").await;
    let mut f = Frames::from(c, 1);
    let (t, first, call, result, second, document, done) = (
        f.turn(),
        f.text("Héllo ✓ "),
        f.tool_use(),
        f.tool_result(),
        f.text("then more. "),
        f.document(),
        f.done(1, 1),
    );
    // Across batches: the offset counts what earlier batches stored (in
    // characters, not bytes).
    store(&db, u, &turn, &[t, first, call.clone()]).await;
    store(&db, u, &turn, &[result.clone(), second]).await;
    store(&db, u, &turn, &[document.clone(), done]).await;
    let rows = messages(&db, c).await;
    assert_eq!(rows[1].content, "Héllo ✓ then more. ");
    assert_eq!(
        rows[1].events,
        json!([stored(&call, 8), stored(&result, 8), stored(&document, 19)])
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_answer_stopped_before_its_first_word_is_stored_as_stopped(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let c = Uuid::new_v4();
    let turn = open(&db, u, c, "Never mind").await;
    let mut f = Frames::from(c, 1);
    store(&db, u, &turn, &[f.turn()]).await;
    store(&db, u, &turn, &[f.done(3, 0)]).await;
    let rows = messages(&db, c).await;
    assert_eq!(rows[1].content, "");
    assert_eq!(rows[1].events, json!([{"type": "stopped"}]));
    assert!(rows[1].complete);

    // An answer with anything in it is kept as it is.
    let next = open(&db, u, c, "Say one word").await;
    let mut g = Frames::from(c, 3);
    store(&db, u, &next, &[g.turn(), g.text("Word"), g.done(1, 1)]).await;
    let rows = messages(&db, c).await;
    assert_eq!(rows[3].content, "Word");
    assert_eq!(rows[3].events, json!([]));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_answer_stopped_midway_keeps_its_text_and_says_where_it_stopped(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let c = Uuid::new_v4();
    let turn = open(&db, u, c, "Tell me a long story").await;
    let mut f = Frames::from(c, 1);
    store(&db, u, &turn, &[f.turn(), f.text("Once upon"), f.stopped()]).await;
    let rows = messages(&db, c).await;
    assert_eq!(rows[1].content, "Once upon");
    assert_eq!(rows[1].events, json!([{"type": "stopped", "at": 9}]));
    assert!(rows[1].complete);
}

/// The conversation's current messages (as `GET /api/conversations/{id}` lists them).
async fn current(db: &PgPool, conversation: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "select content from messages where conversation_id = $1 and superseded_by is null
         order by position",
    )
    .bind(conversation)
    .fetch_all(db)
    .await
    .expect("messages")
}

/// A finished turn: `question` answered with `answer`.
async fn answered(db: &PgPool, u: Uuid, c: Uuid, question: &str, answer: &str) -> OpenTurn {
    let turn = open(db, u, c, question).await;
    let seq = conversation(db, c).await.2 as u64;
    let mut f = Frames::from(c, seq + 1);
    store(
        db,
        u,
        &turn,
        &[
            f.turn_of(Some(turn.message_id)),
            f.text(answer),
            f.done(1, 1),
        ],
    )
    .await;
    turn
}

fn replacing(content: &str, replaced: Uuid) -> NewMessage<'_> {
    NewMessage {
        replaces: Some(replaced),
        ..NewMessage::text(content)
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_message_in_the_place_of_another_hides_it_and_what_followed(db: PgPool) {
    let u = user(&db, "edit@example.com").await;
    let c = Uuid::new_v4();
    answered(&db, u, c, "alpha", "A").await;
    let bravo = answered(&db, u, c, "bravo", "B").await;
    answered(&db, u, c, "charlie", "C").await;

    let edit = transcript::open_turn(&db, u, c, replacing("bravo, edited", bravo.user_message_id))
        .await
        .expect("the edit opens");
    assert!(!edit.created_conversation);
    assert_eq!(current(&db, c).await, ["alpha", "A", "bravo, edited", ""]);
    // Kept, hidden: their tokens were spent.
    assert_eq!(messages(&db, c).await.len(), 8);
    let mut f = Frames::from(c, conversation(&db, c).await.2 as u64 + 1);
    store(
        &db,
        u,
        &edit,
        &[f.turn_of(Some(edit.message_id)), f.text("B2"), f.done(1, 1)],
    )
    .await;
    assert_eq!(current(&db, c).await, ["alpha", "A", "bravo, edited", "B2"]);

    // A replaced message cannot be replaced again, nor an answer, nor another
    // conversation's message; each refusal changes nothing.
    let other = answered(&db, u, Uuid::new_v4(), "elsewhere", "E").await;
    for replaced in [
        bravo.user_message_id,
        edit.message_id,
        other.user_message_id,
    ] {
        let refused = transcript::open_turn(&db, u, c, replacing("again", replaced)).await;
        assert!(
            matches!(refused, Err(TranscriptError::CannotReplace(id)) if id == replaced),
            "{refused:?}"
        );
    }
    assert_eq!(current(&db, c).await, ["alpha", "A", "bravo, edited", "B2"]);
    assert_eq!(messages(&db, c).await.len(), 8);

    // Another user cannot replace anything here.
    let mallory = user(&db, "mallory@example.com").await;
    let stolen =
        transcript::open_turn(&db, mallory, c, replacing("mine", edit.user_message_id)).await;
    assert!(
        matches!(stolen, Err(TranscriptError::NotYours(_))),
        "{stolen:?}"
    );
    assert_eq!(current(&db, c).await, ["alpha", "A", "bravo, edited", "B2"]);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_refused_replacement_taken_back_brings_the_old_messages_back(db: PgPool) {
    let u = user(&db, "regen@example.com").await;
    let c = Uuid::new_v4();
    let alpha = answered(&db, u, c, "alpha", "A").await;
    answered(&db, u, c, "bravo", "B").await;

    // Regenerate of the first answer, refused by the sandbox (a turn runs).
    let regenerate = transcript::open_turn(&db, u, c, replacing("alpha", alpha.user_message_id))
        .await
        .expect("opens");
    assert_eq!(current(&db, c).await, ["alpha", ""]);
    transcript::discard_turn(&db, u, &regenerate)
        .await
        .expect("taken back");
    assert_eq!(current(&db, c).await, ["alpha", "A", "bravo", "B"]);
    assert_eq!(
        count(
            &db,
            "select count(*) from messages where conversation_id = $1 and superseded_by is not null",
            c
        )
        .await,
        0
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_new_conversation_is_titled_from_its_first_message_and_a_rename_stays(db: PgPool) {
    let u = user(&db, "titles@example.com").await;
    let c = Uuid::new_v4();
    let first = "# Plan a **weekend** in Lisbon with friends and family, somewhere near the sea\nsecond line";
    open(&db, u, c, first).await;
    let (_, title, _) = conversation(&db, c).await;
    assert_eq!(
        title,
        "Plan a weekend in Lisbon with friends and family, somewhere…"
    );
    assert!(title.chars().count() <= transcript::TITLE_CHARS);

    // An empty first message (attachments only) is Untitled.
    let empty = Uuid::new_v4();
    open(&db, u, empty, "  \n").await;
    assert_eq!(conversation(&db, empty).await.1, transcript::UNTITLED);

    // The user renames it; later turns never overwrite the name.
    sqlx::query("update conversations set title = 'Lisbon' where id = $1")
        .bind(c)
        .execute(&db)
        .await
        .expect("renamed");
    open(&db, u, c, "And a second question").await;
    assert_eq!(conversation(&db, c).await.1, "Lisbon");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn tabs_sending_the_first_message_of_a_conversation_at_once_each_get_their_turn(db: PgPool) {
    let u = user(&db, "tabs@example.com").await;
    let c = Uuid::new_v4();
    let opened =
        futures::future::join_all(
            (0..6).map(|i| {
                let db = db.clone();
                async move {
                    transcript::open_turn(&db, u, c, NewMessage::text(&format!("tab {i}"))).await
                }
            }),
        )
        .await;
    let opened: Vec<OpenTurn> = opened
        .into_iter()
        .map(|o| o.expect("every tab's turn opens"))
        .collect();
    assert_eq!(
        opened.iter().filter(|o| o.created_conversation).count(),
        1,
        "one of them made the conversation"
    );
    let rows = messages(&db, c).await;
    assert_eq!(rows.len(), 12);
    // Each turn's answer comes right after its own question.
    for turn in &opened {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "select id from messages where conversation_id = $1 order by position",
        )
        .bind(c)
        .fetch_all(&db)
        .await
        .expect("ids");
        let asked = ids
            .iter()
            .position(|id| *id == turn.user_message_id)
            .expect("asked");
        assert_eq!(ids.get(asked + 1), Some(&turn.message_id));
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_turn_reads_the_users_plan_and_voice_setting_with_its_rows(db: PgPool) {
    let u = user(&db, "plan@example.com").await;
    let first = open(&db, u, Uuid::new_v4(), "hello").await;
    assert_eq!(first.tier, router::plans::Tier::Free);
    assert!(!first.voice_answers);
    sqlx::query("update users set tier = 'pro', voice_answers = true where id = $1")
        .bind(u)
        .execute(&db)
        .await
        .expect("upgraded");
    let second = open(&db, u, first.conversation_id, "again").await;
    assert_eq!(second.tier, router::plans::Tier::Pro);
    assert!(second.voice_answers);
    assert!(!second.created_conversation);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_batch_waiting_for_a_turn_being_opened_goes_to_that_turns_answer(db: PgPool) {
    let u = user(&db, "waits@example.com").await;
    let c = Uuid::new_v4();
    let first = open(&db, u, c, "first").await;
    // Another router opens the next turn: it holds the conversation's row while
    // its answer is made.
    let mut opening = db.begin().await.expect("begin");
    sqlx::query("update conversations set updated_at = now() where id = $1")
        .bind(c)
        .execute(&mut *opening)
        .await
        .expect("locked");
    let second: Uuid = sqlx::query_scalar(
        "insert into messages (owner_id, conversation_id, role, complete)
         values ($1, $2, 'assistant', false) returning id",
    )
    .bind(u)
    .bind(c)
    .fetch_one(&mut *opening)
    .await
    .expect("answer made");
    // A batch of the new turn (its `turn` event came in an earlier one) waits.
    let mut g = Frames::new(c);
    let events = [g.text("second answer"), g.done(1, 2)];
    let storing = tokio::spawn({
        let db = db.clone();
        async move { transcript::store_events(&db, u, c, Some(second), &events).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!storing.is_finished(), "the batch waits for the lock");
    opening.commit().await.expect("commit");
    let outcome = storing.await.expect("task").expect("stored");
    assert_eq!(outcome.stored, 2);
    let answers: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "select id, content, complete from messages where conversation_id = $1
         and role = 'assistant' order by position",
    )
    .bind(c)
    .fetch_all(&db)
    .await
    .expect("answers");
    assert_eq!(
        answers,
        vec![
            (first.message_id, String::new(), false),
            (second, "second answer".to_string(), true)
        ]
    );
}

// ------------------------------------------------- turns opened together

/// Opens `(user, conversation, content)` turns at once through one opener, as
/// browsers sending messages at the same moment do.
async fn open_at_once(
    opener: &transcript::Opener,
    turns: &[(Uuid, Uuid, String)],
) -> Vec<Result<OpenTurn, TranscriptError>> {
    futures::future::join_all(
        turns
            .iter()
            .map(|(u, c, content)| opener.open(*u, *c, NewMessage::text(content))),
    )
    .await
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn turns_asked_for_at_once_are_opened_together_each_as_its_own_user(db: PgPool) {
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(user(&db, &format!("burst{i}@example.com")).await);
    }
    sqlx::query("update users set tier = 'pro', voice_answers = true where id = $1")
        .bind(users[1])
        .execute(&db)
        .await
        .expect("upgraded");
    // Each user: a conversation of their own per turn, except that the first
    // user's five tabs all send in one new conversation.
    let shared = Uuid::new_v4();
    let mut turns = Vec::new();
    for round in 0..5 {
        for (i, u) in users.iter().enumerate() {
            let c = if i == 0 { shared } else { Uuid::new_v4() };
            turns.push((*u, c, format!("question {round} of user {i}")));
        }
    }
    let opener = transcript::Opener::new(db.clone());
    let opened = open_at_once(&opener, &turns).await;

    for ((u, c, content), turn) in turns.iter().zip(&opened) {
        let turn = turn.as_ref().expect("every turn opens");
        assert_eq!(turn.conversation_id, *c);
        let (owner, role, stored, complete): (Uuid, String, String, bool) =
            sqlx::query_as("select owner_id, role, content, complete from messages where id = $1")
                .bind(turn.user_message_id)
                .fetch_one(&db)
                .await
                .expect("the user's message");
        assert_eq!(
            (owner, role.as_str(), stored.as_str(), complete),
            (*u, "user", content.as_str(), true)
        );
        let (owner, role, complete): (Uuid, String, bool) =
            sqlx::query_as("select owner_id, role, complete from messages where id = $1")
                .bind(turn.message_id)
                .fetch_one(&db)
                .await
                .expect("the empty answer");
        assert_eq!((owner, role.as_str(), complete), (*u, "assistant", false));
        assert_eq!(
            conversation(&db, *c).await.0,
            *u,
            "the conversation is its user's"
        );
        let pro = *u == users[1];
        assert_eq!(
            turn.tier == router::plans::Tier::Pro,
            pro,
            "each turn reads its own user's plan"
        );
        assert_eq!(turn.voice_answers, pro);
    }
    // The shared conversation: made once, each question followed by its answer.
    let in_shared: Vec<&OpenTurn> = opened
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .filter(|o| o.conversation_id == shared)
        .collect();
    assert_eq!(
        in_shared.iter().filter(|o| o.created_conversation).count(),
        1
    );
    let ids: Vec<Uuid> =
        sqlx::query_scalar("select id from messages where conversation_id = $1 order by position")
            .bind(shared)
            .fetch_all(&db)
            .await
            .expect("ids");
    assert_eq!(ids.len(), 10);
    for turn in in_shared {
        let asked = ids
            .iter()
            .position(|id| *id == turn.user_message_id)
            .expect("asked");
        assert_eq!(ids.get(asked + 1), Some(&turn.message_id));
    }
    // Fewer transactions than turns: rows of one transaction share its start time.
    let transactions: i64 = sqlx::query_scalar("select count(distinct created_at) from messages")
        .fetch_one(&db)
        .await
        .expect("count");
    assert!(
        transactions < turns.len() as i64,
        "{} turns were opened in {transactions} transactions",
        turns.len()
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_turn_in_another_users_conversation_is_refused_alone_in_its_batch(db: PgPool) {
    let owner = user(&db, "owner@example.com").await;
    let intruder = user(&db, "intruder@example.com").await;
    let theirs = open(&db, owner, Uuid::new_v4(), "private").await;
    let mut turns: Vec<(Uuid, Uuid, String)> = (0..10)
        .map(|i| (owner, Uuid::new_v4(), format!("mine {i}")))
        .collect();
    turns.insert(
        5,
        (intruder, theirs.conversation_id, "let me in".to_string()),
    );
    let opener = transcript::Opener::new(db.clone());
    let opened = open_at_once(&opener, &turns).await;
    for (i, turn) in opened.iter().enumerate() {
        if i == 5 {
            assert!(
                matches!(turn, Err(TranscriptError::NotYours(c)) if *c == theirs.conversation_id),
                "{turn:?}"
            );
        } else {
            turn.as_ref().expect("the owner's turns open");
        }
    }
    assert_eq!(
        messages(&db, theirs.conversation_id).await.len(),
        2,
        "nothing added to it"
    );
    assert_eq!(conversation(&db, theirs.conversation_id).await.0, owner);
    assert_eq!(
        count(
            &db,
            "select count(*) from messages where owner_id = $1",
            intruder
        )
        .await,
        0
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_batch_the_database_refuses_opens_each_of_its_turns_on_its_own(db: PgPool) {
    let u = user(&db, "nul@example.com").await;
    // A NUL character is text Postgres does not store: the batch holding it
    // fails as a whole.
    let mut turns: Vec<(Uuid, Uuid, String)> = (0..10)
        .map(|i| (u, Uuid::new_v4(), format!("fine {i}")))
        .collect();
    turns.insert(4, (u, Uuid::new_v4(), "bad \0 byte".to_string()));
    let opener = transcript::Opener::new(db.clone());
    let opened = open_at_once(&opener, &turns).await;
    for (i, turn) in opened.iter().enumerate() {
        if i == 4 {
            assert!(matches!(turn, Err(TranscriptError::Db(_))), "{turn:?}");
        } else {
            let turn = turn.as_ref().expect("the others open");
            assert_eq!(messages(&db, turn.conversation_id).await.len(), 2);
        }
    }
    assert_eq!(
        count(
            &db,
            "select count(*) from conversations where owner_id = $1",
            u
        )
        .await,
        10
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_turn_whose_sender_stopped_waiting_is_taken_back(db: PgPool) {
    let u = user(&db, "gone@example.com").await;
    let busy = open(&db, u, Uuid::new_v4(), "busy").await;
    // Another transaction holds the conversation: both batches the opener runs
    // at once wait for it.
    let mut holding = db.begin().await.expect("begin");
    sqlx::query("select 1 from conversations where id = $1 for update")
        .bind(busy.conversation_id)
        .execute(&mut *holding)
        .await
        .expect("locked");
    let opener = transcript::Opener::new(db.clone());
    // Each starts a batch of its own (the previous one is already waiting).
    let mut waiting = Vec::new();
    for i in 0..transcript::RUNNING_BATCHES {
        let opener = opener.clone();
        let c = busy.conversation_id;
        waiting.push(tokio::spawn(async move {
            opener
                .open(u, c, NewMessage::text(&format!("waits {i}")))
                .await
        }));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // This one waits for a batch; its sender gives up.
    let gone = Uuid::new_v4();
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        opener.open(u, gone, NewMessage::text("never mind")),
    )
    .await;
    assert!(gave_up.is_err(), "it waited for the lock");
    // The next turn in that conversation, asked for meanwhile, goes in the same
    // batch, after it.
    let next = tokio::spawn({
        let opener = opener.clone();
        async move { opener.open(u, gone, NewMessage::text("next")).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    holding.commit().await.expect("released");
    for task in waiting {
        task.await.expect("task").expect("the waiting turns open");
    }
    let next = next.await.expect("task").expect("the next turn opens");
    // The abandoned turn was opened, then taken back before the next one was
    // answered: nobody sends it to a sandbox.
    let rows = messages(&db, gone).await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.role.as_str(), r.content.as_str()))
            .collect::<Vec<_>>(),
        [("user", "next"), ("assistant", "")]
    );
    assert!(
        !next.created_conversation,
        "the abandoned turn had made the conversation"
    );
    assert_eq!(
        messages(&db, busy.conversation_id).await.len(),
        2 + 2 * transcript::RUNNING_BATCHES
    );
}

// ------------------------------------------- event batches stored together

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn batches_pushed_at_once_are_stored_together_each_as_its_own_user(db: PgPool) {
    let writer = transcript::Writer::new(db.clone());
    let mut turns = Vec::new();
    for i in 0..12 {
        let u = user(&db, &format!("push{i}@example.com")).await;
        turns.push((
            u,
            open(&db, u, Uuid::new_v4(), &format!("question {i}")).await,
        ));
    }
    // Every sandbox pushes its whole turn at once; the first three push it
    // twice (a retry racing the first try), the fourth pushes into another
    // user's conversation.
    let intruder = turns[3].0;
    let victim = turns[4].1;
    let mut pushes = Vec::new();
    for (i, (u, turn)) in turns.iter().enumerate() {
        let mut f = Frames::from(turn.conversation_id, 1);
        let frames: std::sync::Arc<[SandboxFrame]> = vec![
            f.turn_of(Some(turn.message_id)),
            f.text(&format!("answer {i}, ")),
            f.tool_use(),
            f.text("done"),
            f.done(10 + i as u64, 20),
        ]
        .into();
        pushes.push((
            *u,
            turn.conversation_id,
            Some(turn.message_id),
            frames.clone(),
        ));
        if i < 3 {
            pushes.push((*u, turn.conversation_id, Some(turn.message_id), frames));
        }
    }
    let mut g = Frames::from(victim.conversation_id, 100);
    pushes.push((
        intruder,
        victim.conversation_id,
        Some(victim.message_id),
        vec![g.text("injected")].into(),
    ));
    let results = futures::future::join_all(
        pushes
            .iter()
            .map(|(u, c, m, frames)| writer.store(*u, *c, *m, frames.clone())),
    )
    .await;

    let last = results.last().expect("the intruder's push");
    assert!(
        matches!(last, Err(TranscriptError::NotYours(c)) if *c == victim.conversation_id),
        "{last:?}"
    );
    let mut stored_per_conversation = std::collections::HashMap::new();
    for ((_, c, _, frames), result) in pushes.iter().zip(&results).take(pushes.len() - 1) {
        let outcome = result.as_ref().expect("stored");
        assert_eq!(outcome.last_seq, 5);
        assert_eq!(outcome.stored + outcome.duplicates, frames.len());
        *stored_per_conversation.entry(*c).or_insert(0) += outcome.stored;
    }
    for (i, (_, turn)) in turns.iter().enumerate() {
        assert_eq!(
            stored_per_conversation[&turn.conversation_id], 5,
            "stored once"
        );
        let rows = messages(&db, turn.conversation_id).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1].content,
            format!("answer {i}, done"),
            "each answer its own text"
        );
        assert!(rows[1].complete);
        assert_eq!(rows[1].input_tokens, Some(10 + i as i64));
        assert_eq!(
            rows[1].events.as_array().map(Vec::len),
            Some(1),
            "the tool card"
        );
        assert_eq!(conversation(&db, turn.conversation_id).await.2, 5);
    }
    // Fewer transactions than pushes: rows written by one share its start time.
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct updated_at) from messages where role = 'assistant'",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    assert!(
        transactions < turns.len() as i64,
        "{} answers were written in {transactions} transactions",
        turns.len()
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_batch_that_runs_into_the_next_turn_is_stored_in_both_answers(db: PgPool) {
    let u = user(&db, "two@example.com").await;
    let c = Uuid::new_v4();
    let first = open(&db, u, c, "one").await;
    let second = open(&db, u, c, "two").await;
    let other = open(&db, u, Uuid::new_v4(), "elsewhere").await;
    let writer = transcript::Writer::new(db.clone());
    let mut f = Frames::from(c, 1);
    let both: std::sync::Arc<[SandboxFrame]> = vec![
        f.turn_of(Some(first.message_id)),
        f.text("first answer"),
        f.done(1, 2),
        f.turn_of(Some(second.message_id)),
        f.text("second answer"),
        f.done(3, 4),
    ]
    .into();
    let mut g = Frames::from(other.conversation_id, 1);
    let alone: std::sync::Arc<[SandboxFrame]> = vec![
        g.turn_of(Some(other.message_id)),
        g.text("other answer"),
        g.done(5, 6),
    ]
    .into();
    let (a, b) = tokio::join!(
        writer.store(u, c, Some(first.message_id), both),
        writer.store(u, other.conversation_id, Some(other.message_id), alone),
    );
    let (a, b) = (a.expect("stored"), b.expect("stored"));
    assert_eq!(
        (a.stored, a.last_seq, a.ended),
        (6, 6, Some(Outcome::Complete))
    );
    assert_eq!((b.stored, b.last_seq), (3, 3));
    let rows = messages(&db, c).await;
    let answers: Vec<(&str, bool, Option<i64>)> = rows
        .iter()
        .filter(|r| r.role == "assistant")
        .map(|r| (r.content.as_str(), r.complete, r.input_tokens))
        .collect();
    assert_eq!(
        answers,
        [
            ("first answer", true, Some(1)),
            ("second answer", true, Some(3))
        ]
    );
    assert_eq!(
        messages(&db, other.conversation_id).await[1].content,
        "other answer"
    );
}
