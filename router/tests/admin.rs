//! `router admin …`, run as the built binary against the test's own database:
//! list users, show usage, grant and revoke a plan, disable and enable.

mod common;

use std::process::Output;

use common::TestApp;
use sqlx::PgPool;

/// The test database's URL: the server of `DATABASE_URL` and the database
/// `#[sqlx::test]` made for this test.
async fn database_url(db: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(db)
        .await
        .expect("database name");
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for sqlx::test");
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

async fn admin(db: &PgPool, args: &[&str]) -> Output {
    let url = database_url(db).await;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_router"))
            .arg("admin")
            .args(&args)
            .env("DATABASE_URL", url)
            .env_remove("STRIPE_SECRET_KEY")
            .output()
            .expect("router runs")
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("admin finishes in time")
        .expect("joined")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "admin failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn row(db: &PgPool, email: &str) -> (String, bool, Option<String>, bool) {
    sqlx::query_as(
        "select tier, subscription_active, subscription_status, disabled_at is not null
         from users where email = $1",
    )
    .bind(email)
    .fetch_one(db)
    .await
    .expect("user row")
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn operators_list_grant_revoke_disable_and_see_usage(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let alice = app.register("alice@example.com").await;
    app.register("bob@example.com").await;
    sqlx::query(
        "insert into usage (owner_id, model, input_tokens, output_tokens, cost_micros) values ($1, 'm', 1234, 56, 7890)",
    )
    .bind(alice.id)
    .execute(&db)
    .await
    .expect("usage");

    let users = stdout(&admin(&db, &["users"]).await);
    assert!(users.contains("alice@example.com") && users.contains("bob@example.com"));
    assert!(users.contains(&alice.id.to_string()));

    let usage = stdout(&admin(&db, &["usage", "alice@example.com"]).await);
    assert!(usage.contains("1234") && usage.contains("56"), "{usage}");
    assert!(usage.contains("0.007890"), "{usage}");
    assert!(!usage.contains("bob@example.com"), "{usage}");
    let everyone = stdout(&admin(&db, &["usage"]).await);
    assert!(everyone.contains("bob@example.com"), "{everyone}");

    stdout(&admin(&db, &["grant", "ALICE@example.com", "enterprise"]).await);
    assert_eq!(
        row(&db, "alice@example.com").await,
        ("enterprise".into(), true, Some("granted".into()), false)
    );
    assert_eq!(
        row(&db, "bob@example.com").await,
        ("free".into(), false, None, false),
        "only the named user changes"
    );
    stdout(&admin(&db, &["revoke", &alice.id.to_string()]).await);
    assert_eq!(
        row(&db, "alice@example.com").await,
        ("free".into(), false, Some("revoked".into()), false)
    );

    stdout(&admin(&db, &["disable", "bob@example.com"]).await);
    assert!(row(&db, "bob@example.com").await.3);
    let listed = stdout(&admin(&db, &["users"]).await);
    let bob_line = listed
        .lines()
        .find(|l| l.contains("bob@example.com"))
        .expect("bob listed");
    assert!(bob_line.trim_end().ends_with("yes"), "{bob_line}");
    stdout(&admin(&db, &["enable", "bob@example.com"]).await);
    assert!(!row(&db, "bob@example.com").await.3);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn unknown_users_and_plans_fail_with_a_clear_message(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    app.register("alice@example.com").await;
    let missing = admin(&db, &["grant", "nobody@example.com", "pro"]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user nobody@example.com"));
    let bad_plan = admin(&db, &["grant", "alice@example.com", "gold"]).await;
    assert!(!bad_plan.status.success());
    assert!(String::from_utf8_lossy(&bad_plan.stderr).contains("no plan is called `gold`"));
    assert_eq!(row(&db, "alice@example.com").await.0, "free");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn operators_list_egress_connections_per_user_and_since(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    for (owner, host, decision, reason, down, ago) in [
        (alice.id, "pypi.org", "allowed", "plan", 5000_i64, "1 hour"),
        (
            alice.id,
            "evil.example",
            "denied",
            "not_approved",
            0,
            "2 hours",
        ),
        (alice.id, "old.example", "allowed", "approved", 7, "3 days"),
        (bob.id, "bob-only.example", "allowed", "plan", 11, "1 hour"),
    ] {
        sqlx::query(
            "insert into egress_connections
                 (owner_id, host, port, decision, reason, bytes_up, bytes_down, started_at, ended_at)
             values ($1, $2, 443, $3, $4, 10, $5, now() - $6::interval, now() - $6::interval)",
        )
        .bind(owner)
        .bind(host)
        .bind(decision)
        .bind(reason)
        .bind(down)
        .bind(ago)
        .execute(&db)
        .await
        .expect("audit row");
    }

    let listed = stdout(&admin(&db, &["egress", "--user", "alice@example.com"]).await);
    let pypi = listed
        .lines()
        .find(|l| l.contains("pypi.org"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        pypi.contains("allowed") && pypi.contains("plan") && pypi.contains("5000"),
        "{pypi}"
    );
    assert!(
        listed.contains("evil.example") && listed.contains("not_approved"),
        "{listed}"
    );
    assert!(
        !listed.contains("old.example"),
        "older than a day: {listed}"
    );
    assert!(!listed.contains("bob-only.example"), "{listed}");
    // Newest first.
    assert!(
        listed.find("pypi.org") < listed.find("evil.example"),
        "{listed}"
    );

    let week = stdout(&admin(&db, &["egress", "--since", "7d"]).await);
    assert!(
        week.contains("old.example") && week.contains("bob-only.example"),
        "{week}"
    );
}
