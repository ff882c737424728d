//! Hostile tenants on one machine (issue 15): what one user's agent does to its
//! own sandbox stays there. Real `sandbox` processes under bubblewrap run the real
//! Claude Code CLI, whose Bash tool the fake model upstream scripts.
//!
//! - Each workspace runs as a host uid of its own, so a process flood in one uses
//!   up only its own RLIMIT_NPROC: another user still wakes and runs commands.
//! - The idle reaper never waits on one user: a workspace whose sleep is stuck is
//!   cancelled and reported, and the others sleep on time.
//! - A workspace written past its quota is stored up to it and the user is told.
//! - `/tmp` is a tmpfs of a fixed size.
//! - Host uids are kept per workspace and never shared; a warm pool's claim makes
//!   the slot's uid and the new workspace token the workspace's in one
//!   statement, or (the slot gone) changes nothing.

mod common;

use std::{os::unix::fs::MetadataExt, time::Duration};

use common::{
    TestApp,
    live::{Live, of_type, wait_for},
};
use router::{config::UidRange, proxy::Status, workspaces::uids};
use sandbox::testing::Reply;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The output of the first tool call of a turn.
fn first_result(frames: &[Value]) -> String {
    of_type(frames, "tool_result")
        .first()
        .and_then(|r| r["content"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no tool result: {frames:?}"))
}

/// Queues one Bash call running `command`, then a closing text.
fn script_bash(live: &Live, id: &str, command: &str) {
    live.api.push(Reply::tool_use(
        id,
        "Bash",
        json!({"command": command, "description": "run"}),
    ));
    live.api.push(Reply::text(&["done"]));
}

/// Forks sleeping children until the kernel refuses, then lets a few go so the
/// agent's own tool can finish: the sandbox's uid is left at its process limit.
const FLOOD: &str = r#"perl -e 'my @kids; while (1) { my $p = fork(); last unless defined $p; if ($p == 0) { close STDIN; close STDOUT; close STDERR; sleep 600; exit 0 } push @kids, $p } my $err = "$!"; kill 9, splice(@kids, 0, 8); print "FORKED ", scalar(@kids), " then: $err\n"'"#;

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_process_flood_in_one_workspace_leaves_another_able_to_wake_and_run_commands(db: PgPool) {
    let live = Live::with_config(db, |c| c.sandbox_max_procs = 200).await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;

    script_bash(&live, "toolu_flood", FLOOD);
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("start as many processes as you can", None).await;
    let flood = first_result(&a.turn().await);
    assert!(
        flood.contains("FORKED") && flood.contains("Resource temporarily unavailable"),
        "alice's sandbox reached its process limit: {flood}"
    );

    // Alice's processes still run; Bob's workspace wakes and runs a command.
    script_bash(&live, "toolu_bob", "echo BOB-RAN");
    let mut b = live.browser(&bob.access).await;
    b.ready().await;
    b.message("run a command", None).await;
    let output = first_result(&b.turn().await);
    assert!(output.contains("BOB-RAN"), "{output}");

    let owner = |user| {
        std::fs::metadata(live.workspace(user))
            .expect("workspace")
            .uid()
    };
    assert_ne!(owner(&alice), owner(&bob), "each workspace has its own uid");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_stuck_workspace_is_cancelled_and_reported_while_others_sleep_on_time(db: PgPool) {
    let live = Live::with_config(db, |c| {
        c.idle_timeout = Duration::from_secs(1);
        c.sleep_timeout = Duration::from_secs(2);
    })
    .await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    let registry = live.app.state.workspaces.clone();

    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    // Something holds Alice's workspace and never lets go (an upload's copy
    // stuck on storage, say): her sleep cannot start.
    let (held, holding) = tokio::sync::oneshot::channel();
    let stuck = {
        let registry = registry.clone();
        tokio::spawn(async move {
            registry
                .with_workspace_dir(alice.id, move |_, _| async move {
                    let _ = held.send(());
                    std::future::pending::<()>().await
                })
                .await
        })
    };
    tokio::time::timeout(common::live::WAIT, holding)
        .await
        .expect("held in time")
        .expect("held");
    drop(a);
    wait_for(|| registry.cancelled_sleeps(alice.id) >= 1).await;

    // Bob's idle timeout passes while Alice's workspace is stuck: his sleeps.
    let mut b = live.browser(&bob.access).await;
    b.ready().await;
    drop(b);
    let bobs = registry.hub(bob.id);
    wait_for(|| bobs.status() == Status::Asleep).await;
    let alices = registry.hub(alice.id);
    assert_eq!(alices.status(), Status::Ready, "alice's is still stuck");

    // Once let go, Alice's sleeps too.
    stuck.abort();
    wait_for(|| alices.status() == Status::Asleep).await;
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_workspace_written_past_its_quota_is_stored_up_to_it_and_the_user_is_told(db: PgPool) {
    let live = Live::with_config(db, |c| {
        c.workspace_max_bytes = 100_000;
        c.workspace_max_files = 40;
    })
    .await;
    let alice = live.app.register("alice@example.com").await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    let stored = || async {
        sqlx::query_as::<_, (i64, Option<i64>)>(
            "select count(*), sum(size)::bigint from files where owner_id = $1 and kind = 'workspace'",
        )
        .bind(alice.id)
        .fetch_one(&live.app.db)
        .await
        .expect("count")
    };

    // Bytes: 300 kB in a 100 kB quota.
    script_bash(
        &live,
        "toolu_big",
        "echo small > small.txt && head -c 300000 /dev/zero > big.bin && echo WROTE",
    );
    a.message("write a big file", None).await;
    let frames = a.turn().await;
    assert!(first_result(&frames).contains("WROTE"), "{frames:?}");
    let told = a.until(|f| f["type"] == "error").await;
    let error = told.last().expect("a frame");
    assert_eq!(error["code"], "workspace_over_quota", "{told:?}");
    let message = error["message"].as_str().expect("message");
    assert!(message.contains("100000 bytes"), "{message}");
    assert!(message.contains("not saved"), "{message}");
    let (_, bytes) = stored().await;
    assert!(bytes.unwrap_or(0) <= 100_000, "stored {bytes:?} bytes");

    // Files: a hundred in a quota of forty.
    script_bash(
        &live,
        "toolu_many",
        "rm big.bin && mkdir many && for i in $(seq 1 100); do echo $i > many/f$i; done && echo MADE",
    );
    a.message("write many files", None).await;
    let frames = a.turn().await;
    assert!(first_result(&frames).contains("MADE"), "{frames:?}");
    let told = a.until(|f| f["type"] == "error").await;
    let error = told.last().expect("a frame");
    assert_eq!(error["code"], "workspace_over_quota", "{told:?}");
    let message = error["message"].as_str().expect("message");
    assert!(message.contains("40 files"), "{message}");
    let (files, _) = stored().await;
    assert!((1..=40).contains(&files), "stored {files} files");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn tmp_is_a_tmpfs_of_the_configured_size(db: PgPool) {
    let live = Live::with_config(db, |c| c.sandbox_tmp_bytes = 8 * 1024 * 1024).await;
    let alice = live.app.register("alice@example.com").await;
    script_bash(
        &live,
        "toolu_tmp",
        "df -B1 --output=size /tmp | tail -1; head -c 20000000 /dev/zero > /tmp/fill; echo \"EXIT $?\"",
    );
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("fill /tmp", None).await;
    let output = first_result(&a.turn().await);
    assert!(output.contains("8388608"), "{output}");
    assert!(output.contains("No space left on device"), "{output}");
    assert!(!output.contains("EXIT 0"), "{output}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_workspace_of_the_former_shared_user_is_handed_to_its_own_uid_on_wake(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    // Left by a router of before: owned by the one shared sandbox user.
    let workspace = live.workspace(&alice);
    std::fs::create_dir_all(workspace.join("notes")).expect("mkdir");
    let old = workspace.join("notes/old.txt");
    std::fs::write(&old, "from before\n").expect("write");
    for path in [
        workspace.parent().expect("home"),
        &workspace,
        &workspace.join("notes"),
        &old,
    ] {
        std::os::unix::fs::chown(path, Some(999), Some(995)).expect("chown");
    }

    script_bash(
        &live,
        "toolu_append",
        "echo more >> notes/old.txt && cat notes/old.txt && echo APPENDED",
    );
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("add to my notes", None).await;
    let output = first_result(&a.turn().await);
    assert!(output.contains("from before"), "{output}");
    assert!(output.contains("APPENDED"), "{output}");

    let uid: i64 = sqlx::query_scalar("select host_uid from workspaces where owner_id = $1")
        .bind(alice.id)
        .fetch_one(&live.app.db)
        .await
        .expect("uid");
    let meta = std::fs::metadata(&old).expect("meta");
    assert_eq!((i64::from(meta.uid()), i64::from(meta.gid())), (uid, uid));
    assert!(live.app.state.config.sandbox_uids.contains(meta.uid()));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn host_uids_are_kept_per_workspace_and_never_shared(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let carol = app.register("carol@example.com").await;
    let range = UidRange {
        first: 500_000,
        last: 500_001,
    };
    let a = uids::of_workspace(&db, alice.id, range)
        .await
        .expect("alice");
    let b = uids::of_workspace(&db, bob.id, range).await.expect("bob");
    assert_ne!(a, b);
    assert!(range.contains(a) && range.contains(b));
    // Asked again (a restarted router asks the database): the same.
    assert_eq!(
        uids::of_workspace(&db, alice.id, range)
            .await
            .expect("again"),
        a
    );
    // The range is full: no uid is given twice.
    let full = uids::of_workspace(&db, carol.id, range).await;
    assert!(matches!(full, Err(uids::UidError::Full(_))), "{full:?}");
    // A moved range gives a new uid from it.
    let moved = UidRange {
        first: 600_000,
        last: 600_009,
    };
    let again = uids::of_workspace(&db, alice.id, moved)
        .await
        .expect("moved");
    assert!(moved.contains(again));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn fifty_first_wakes_at_once_each_get_their_own_uid(db: PgPool) {
    let range = UidRange {
        first: 700_000,
        last: 700_099,
    };
    let mut users = Vec::new();
    for i in 0..50 {
        let id: uuid::Uuid = sqlx::query_scalar(
            "insert into users (email, password_hash) values ($1, 'x') returning id",
        )
        .bind(format!("wake{i}@example.com"))
        .fetch_one(&db)
        .await
        .expect("user");
        users.push(id);
    }
    // A few warm slots reserved at the same moment, from the top of the range.
    let slots = (0..5).map(|_| uids::reserve_slot(&db, range));
    let wakes = users.iter().map(|u| uids::of_workspace(&db, *u, range));
    let (slots, wakes) = tokio::join!(
        futures::future::join_all(slots),
        futures::future::join_all(wakes)
    );
    let mut all: Vec<u32> = Vec::new();
    for got in slots.into_iter().chain(wakes) {
        all.push(got.expect("a uid at once, under load"));
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a uid was given twice");
    assert!(all.iter().all(|u| range.contains(*u)));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_warm_claim_makes_the_slots_uid_and_the_new_token_the_workspaces_or_changes_nothing(
    db: PgPool,
) {
    use router::workspaces::tokens;
    let range = UidRange {
        first: 710_000,
        last: 710_099,
    };
    let alice: uuid::Uuid = sqlx::query_scalar(
        "insert into users (email, password_hash) values ('alice@example.com', 'x') returning id",
    )
    .fetch_one(&db)
    .await
    .expect("user");
    let before = uids::of_workspace(&db, alice, range).await.expect("uid");
    let old = tokens::generate();
    tokens::install(&db, alice, &old).await.expect("token");
    let slot = uids::reserve_slot(&db, range).await.expect("slot");
    assert_ne!(slot, before);
    let host_uid = || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select host_uid from workspaces where owner_id = $1")
                .bind(alice)
                .fetch_one(&db)
                .await
                .expect("row")
        }
    };

    let new = tokens::generate();
    assert!(
        uids::claim_slot(&db, alice, slot, &new)
            .await
            .expect("claim")
    );
    assert_eq!(host_uid().await, i64::from(slot));
    assert_eq!(
        tokens::verify(&db, &new).await.expect("verify"),
        Some(alice)
    );
    assert_eq!(tokens::verify(&db, &old).await.expect("verify"), None);

    // The slot is gone: a second claim changes nothing, the token included.
    let late = tokens::generate();
    assert!(
        !uids::claim_slot(&db, alice, slot, &late)
            .await
            .expect("claim")
    );
    assert_eq!(host_uid().await, i64::from(slot));
    assert_eq!(
        tokens::verify(&db, &new).await.expect("verify"),
        Some(alice)
    );
    assert_eq!(tokens::verify(&db, &late).await.expect("verify"), None);
}
