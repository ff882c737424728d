//! The router through PgBouncer in `pool_mode = transaction` (as Supabase's
//! pooler on port 6543): `DATABASE_URL` at the pooler, `DATABASE_DIRECT_URL`
//! at Postgres. Requests, a chat turn, uploads, many clients at once, no
//! row-level-security leak between pooled clients, and routers starting together.

mod common;

use axum::http::StatusCode;
use common::{
    PASSWORD, Reply, TestApp, User,
    live::{Live, of_type},
    pgbouncer::PgBouncer,
    process,
};
use sandbox::testing::Reply as ModelReply;
use serde_json::json;
use sqlx::PgPool;

/// A router in-process whose pool goes through `bouncer`, as `main` builds it.
async fn pooled_app(db: &PgPool, bouncer: &PgBouncer) -> TestApp {
    let pooled = bouncer.router_pool(db).await;
    let (url, direct) = (bouncer.url_of(db).await, process::database_url(db).await);
    TestApp::with_config(pooled, |c| {
        c.database_url = url;
        c.database_direct_url = Some(direct);
    })
    .await
}

async fn upload(app: &TestApp, user: &User, name: &str, content: &[u8]) -> Reply {
    app.call(common::upload_request(
        &user.access,
        name.as_bytes(),
        "text/plain",
        content,
    ))
    .await
}

fn names(reply: &Reply, list: &str, field: &str) -> Vec<String> {
    reply.body[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} in {}", reply.body))
        .iter()
        .map(|f| f[field].as_str().unwrap_or_default().to_string())
        .collect()
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn accounts_and_uploads_work_through_a_transaction_pooler(db: PgPool) {
    let bouncer = PgBouncer::start().await;
    let app = pooled_app(&db, &bouncer).await;
    let alice = app.register("alice@example.com").await;
    let me = app.get("/api/documents", &alice.access).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    let login = app
        .post(
            "/api/auth/login",
            json!({"email": "alice@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);

    let stored = upload(&app, &alice, "notes.txt", b"pooled bytes").await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    let listed = app.get("/api/files", &alice.access).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert!(
        names(&listed, "files", "path")
            .iter()
            .any(|p| p.ends_with("notes.txt")),
        "{}",
        listed.body
    );
    // Queried directly: the row is there, under Alice.
    let rows: i64 =
        sqlx::query_scalar("select count(*) from files where owner_id = $1 and kind = 'upload'")
            .bind(alice.id)
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(rows, 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn twenty_clients_at_once_through_the_pooler(db: PgPool) {
    let bouncer = PgBouncer::start().await;
    let app = pooled_app(&db, &bouncer).await;
    let clients = (0..20).map(|i| {
        let app = &app;
        async move {
            let user = app.register(&format!("user{i}@example.com")).await;
            for round in 0..3 {
                let stored = upload(app, &user, &format!("f{i}-{round}.txt"), b"x").await;
                assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
                let me = app.get("/api/documents", &user.access).await;
                assert_eq!(me.status, StatusCode::OK, "{}", me.body);
            }
            let listed = app.get("/api/files", &user.access).await;
            assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
            names(&listed, "files", "path").len()
        }
    });
    let counts = futures::future::join_all(clients).await;
    assert_eq!(counts, vec![3; 20]);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn pooled_clients_see_only_their_own_rows(db: PgPool) {
    let bouncer = PgBouncer::start().await;
    let app = pooled_app(&db, &bouncer).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    for (user, name) in [(&alice, "alice-only.txt"), (&bob, "bob-only.txt")] {
        let stored = upload(&app, user, name, name.as_bytes()).await;
        assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    }
    // Interleaved: each request's transaction may land on a server connection the
    // other user's request just used.
    let requests = (0..40).map(|i| {
        let (app, user, mine, theirs) = if i % 2 == 0 {
            (&app, &alice, "alice-only.txt", "bob-only.txt")
        } else {
            (&app, &bob, "bob-only.txt", "alice-only.txt")
        };
        async move {
            let listed = app.get("/api/files", &user.access).await;
            assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
            let paths = names(&listed, "files", "path");
            assert!(paths.iter().any(|p| p.ends_with(mine)), "{paths:?}");
            assert!(!paths.iter().any(|p| p.ends_with(theirs)), "{paths:?}");
        }
    });
    futures::future::join_all(requests).await;
    // Whatever ran before, a pooled connection carries no user identity.
    let pooled = bouncer.router_pool(&db).await;
    for _ in 0..(2 * common::pgbouncer::SERVER_CONNECTIONS) {
        let (role, user): (String, String) = router::db::query_as(
            "select current_user::text, coalesce(current_setting('app.user_id', true), '')",
        )
        .fetch_one(&pooled)
        .await
        .expect("settings");
        assert_eq!((role.as_str(), user.as_str()), ("postgres", ""));
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_chat_turn_saves_a_document_through_the_pooler(db: PgPool) {
    let bouncer = PgBouncer::start().await;
    let pooled = bouncer.router_pool(&db).await;
    let (url, direct) = (bouncer.url_of(&db).await, process::database_url(&db).await);
    let live = Live::with_config(pooled, |c| {
        c.database_url = url;
        c.database_direct_url = Some(direct);
    })
    .await;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(ModelReply::tool_use(
        "toolu_doc",
        "mcp__jarvis__save_document",
        json!({"filename": "plan.md", "content": "# Plan\nship it", "type": "markdown"}),
    ));
    live.api.push(ModelReply::text(&["Saved."]));
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser.message("write a plan", None).await;
    let frames = browser.turn().await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("done")),
        "{frames:?}"
    );
    assert_eq!(of_type(&frames, "document").len(), 1, "{frames:?}");
    let docs = live.app.get("/api/documents", &alice.access).await;
    assert_eq!(names(&docs, "documents", "filename"), vec!["plan.md"]);
}

/// A fresh database: no migration has run.
#[sqlx::test(migrations = false)]
async fn four_routers_starting_together_on_a_fresh_database_all_become_ready(db: PgPool) {
    let bouncer = PgBouncer::start().await;
    let (pooled_url, direct_url) = (bouncer.url_of(&db).await, process::database_url(&db).await);
    let dirs: Vec<_> = (0..4).map(|_| process::data_dir()).collect();
    let mut routers = Vec::new();
    for dir in &dirs {
        let port = process::free_port();
        let child = process::router_command(&pooled_url, dir.path(), "http://127.0.0.1:9", port)
            .env("DATABASE_DIRECT_URL", &direct_url)
            .spawn()
            .expect("the router binary starts");
        routers.push((child, format!("http://127.0.0.1:{port}")));
    }
    futures::future::join_all(routers.iter().map(|(_, url)| process::wait_ready(url))).await;
    // Each serves requests through the pooler.
    for (i, (_, url)) in routers.iter().enumerate() {
        let token = process::register(url, &format!("r{i}@example.com")).await;
        assert!(!token.is_empty());
    }
    // Nothing of the migrator is left holding a lock.
    let held: i64 = sqlx::query_scalar(
        "select count(*) from pg_locks
         where locktype = 'advisory'
           and database = (select oid from pg_database where datname = current_database())",
    )
    .fetch_one(&db)
    .await
    .expect("locks");
    assert_eq!(held, 0);
}

/// Requests per second of `clients` signed-in users each sending `rounds` ×
/// (`GET /api/conversations`, `GET /api/me`) to `app` at once.
async fn rate(app: &TestApp, clients: &[User], rounds: usize) -> f64 {
    let started = std::time::Instant::now();
    let work = clients.iter().map(|user| async move {
        for _ in 0..rounds {
            for uri in ["/api/conversations?limit=100", "/api/me"] {
                let r = app.get(uri, &user.access).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            }
        }
    });
    futures::future::join_all(work).await;
    (clients.len() * rounds * 2) as f64 / started.elapsed().as_secs_f64()
}

/// What the pooler's conditions cost: the same requests through PgBouncer in
/// transaction mode (unnamed statements, a transaction per pool query) and
/// straight to Postgres (cached statements), alternately, 20 clients, both pools
/// of 20 connections. Prints requests/s and their ratio. Run:
/// `cargo test --release -p router --test pooler bench_pooler -- --ignored --nocapture`
#[sqlx::test(migrator = "router::MIGRATOR")]
#[ignore = "a benchmark: run it in the release profile"]
async fn bench_pooler(db: PgPool) {
    const CLIENTS: usize = 20;
    const ROUNDS: usize = 50;
    let bouncer = PgBouncer::start().await;
    let pooled = pooled_app(&db, &bouncer).await;
    let direct_pool = router::db::connect(&process::database_url(&db).await, 20)
        .await
        .expect("a direct pool");
    let direct = TestApp::new(direct_pool).await;
    let mut users = (Vec::new(), Vec::new());
    for i in 0..CLIENTS {
        router::db::set_pooled(true);
        let user = pooled.register(&format!("p{i}@example.com")).await;
        // Test rows go in straight (the helper's statements are named ones).
        for t in 0..5 {
            direct
                .insert_conversation(user.id, &format!("talk {t}"))
                .await;
        }
        users.0.push(user);
        router::db::set_pooled(false);
        let user = direct.register(&format!("d{i}@example.com")).await;
        for t in 0..5 {
            direct
                .insert_conversation(user.id, &format!("talk {t}"))
                .await;
        }
        users.1.push(user);
    }
    let (mut through, mut straight) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        router::db::set_pooled(false);
        straight.push(rate(&direct, &users.1, ROUNDS).await);
        router::db::set_pooled(true);
        through.push(rate(&pooled, &users.0, ROUNDS).await);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, d) = (median(&mut through), median(&mut straight));
    println!(
        "bench_pooler: {p:.0} requests/s through PgBouncer (transaction mode), {d:.0} straight to Postgres: {:.2}× ({CLIENTS} clients, medians of 3)",
        p / d
    );
}
