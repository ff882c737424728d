//! Regenerate and edit-and-resend against the real CLI: a message that `replaces`
//! an earlier prompt makes the agent forget that turn and every turn after it, also
//! across a sandbox restart; the first prompt starts the session afresh; a prompt
//! the agent never saw is refused and changes nothing.

mod common;

use common::*;
use sandbox::testing::{RecordedRequest, Reply};
use serde_json::{Value, json};

fn prompt() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What the model was sent in the last request, as text.
fn last_history(world: &World) -> String {
    let requests: Vec<RecordedRequest> = world.api.message_requests();
    requests.last().expect("a model request").body["messages"].to_string()
}

/// Sends a message with its prompt id (and what it replaces) and collects the turn.
async fn say(
    router: &mut Router,
    id: &str,
    content: &str,
    prompt_id: &str,
    replaces: Option<&str>,
) -> Vec<Value> {
    let mut extra = json!({"prompt_id": prompt_id});
    if let Some(replaced) = replaces {
        extra["replaces"] = replaced.into();
    }
    router.message_with(id, content, extra).await;
    router.turn_end(id).await
}

#[tokio::test]
async fn an_edited_message_forgets_the_turns_after_it_also_after_a_restart() {
    let world = World::new().await;
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    let (p1, p2, p3, p4, p5) = (prompt(), prompt(), prompt(), prompt(), prompt());
    for (content, answer, prompt_id) in [
        ("alpha-question", "alpha-answer", &p1),
        ("bravo-question", "bravo-answer", &p2),
        ("charlie-question", "charlie-answer", &p3),
    ] {
        world.api.push(Reply::text(&[answer]));
        let frames = say(&mut router, &id, content, prompt_id, None).await;
        assert_eq!(text(&frames), answer, "{frames:?}");
        assert_eq!(
            frames[0]["prompt_id"],
            prompt_id.as_str(),
            "the turn names its prompt: {frames:?}"
        );
    }

    world.api.push(Reply::text(&["edited-answer"]));
    let frames = say(&mut router, &id, "edited-bravo", &p4, Some(&p2)).await;
    assert_eq!(text(&frames), "edited-answer", "{frames:?}");
    let seen = last_history(&world);
    for kept in ["alpha-question", "alpha-answer", "edited-bravo"] {
        assert!(seen.contains(kept), "{kept} missing: {seen}");
    }
    for forgotten in [
        "bravo-question",
        "bravo-answer",
        "charlie-question",
        "charlie-answer",
    ] {
        assert!(!seen.contains(forgotten), "{forgotten} still seen: {seen}");
    }

    // A new sandbox resumes the edited branch, not the forgotten one.
    sandbox.kill().await;
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    world.api.push(Reply::text(&["delta-answer"]));
    let frames = say(&mut router, &id, "delta-question", &p5, None).await;
    assert_eq!(text(&frames), "delta-answer", "{frames:?}");
    let seen = last_history(&world);
    for kept in [
        "alpha-question",
        "edited-bravo",
        "edited-answer",
        "delta-question",
    ] {
        assert!(seen.contains(kept), "{kept} missing: {seen}");
    }
    for forgotten in ["bravo-question", "charlie-question", "charlie-answer"] {
        assert!(!seen.contains(forgotten), "{forgotten} still seen: {seen}");
    }
}

#[tokio::test]
async fn replacing_the_first_message_starts_the_conversation_afresh() {
    let world = World::new().await;
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    let (p1, p2, p3) = (prompt(), prompt(), prompt());
    world.api.push(Reply::text(&["alpha-answer"]));
    say(&mut router, &id, "alpha-question", &p1, None).await;
    world.api.push(Reply::text(&["bravo-answer"]));
    say(&mut router, &id, "bravo-question", &p2, None).await;

    // Regenerate of the first answer: the same words again, nothing after them.
    world.api.push(Reply::text(&["alpha-again"]));
    let frames = say(&mut router, &id, "alpha-question", &p3, Some(&p1)).await;
    assert_eq!(text(&frames), "alpha-again", "{frames:?}");
    let seen = last_history(&world);
    assert!(seen.contains("alpha-question"), "{seen}");
    for forgotten in ["alpha-answer", "bravo-question", "bravo-answer"] {
        assert!(!seen.contains(forgotten), "{forgotten} still seen: {seen}");
    }
}

#[tokio::test]
async fn a_prompt_the_agent_never_saw_is_refused_and_changes_nothing() {
    let world = World::new().await;
    let sandbox = world.sandbox(&[]).await;
    let mut router = sandbox.connect().await;
    let id = conversation();
    world.api.push(Reply::text(&["alpha-answer"]));
    say(&mut router, &id, "alpha-question", &prompt(), None).await;
    let requests = world.api.message_requests().len();

    let message_id = router
        .message_with(
            &id,
            "edited",
            json!({"prompt_id": prompt(), "replaces": prompt()}),
        )
        .await;
    let refusal = router.next().await;
    assert_eq!(refusal["type"], "error", "{refusal}");
    assert_eq!(refusal["code"], "cannot_rewind", "{refusal}");
    assert_eq!(refusal["message_id"], message_id.as_str(), "{refusal}");
    assert!(
        refusal.get("seq").is_none(),
        "a refusal is no turn: {refusal}"
    );
    assert_eq!(world.api.message_requests().len(), requests);

    let bad = router
        .message_with(&id, "edited", json!({"replaces": "not-a-uuid"}))
        .await;
    let refusal = router.next().await;
    assert_eq!(
        (refusal["code"].as_str(), refusal["message_id"].as_str()),
        (Some("bad_frame"), Some(bad.as_str())),
        "{refusal}"
    );

    // The conversation goes on with everything it had.
    world.api.push(Reply::text(&["still here"]));
    let frames = say(&mut router, &id, "next-question", &prompt(), None).await;
    assert_eq!(text(&frames), "still here", "{frames:?}");
    let seen = last_history(&world);
    assert!(seen.contains("alpha-answer"), "{seen}");
}
