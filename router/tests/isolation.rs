//! Nothing crosses users: every read, update, delete and download endpoint
//! answers 404 for another user's id and changes nothing; lists show only the
//! caller's rows; and row-level security hides rows even from a query that
//! forgets its owner filter.

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use serde_json::json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

struct Owned {
    document: Uuid,
    conversation: Uuid,
    file: Uuid,
}

async fn seed(app: &TestApp, owner: Uuid, tag: &str) -> Owned {
    Owned {
        document: app
            .insert_document(owner, &format!("{tag}.md"), &format!("# {tag}'s notes"))
            .await,
        conversation: app
            .insert_conversation(owner, &format!("{tag}'s chat"))
            .await,
        file: app
            .insert_file(owner, &format!("{tag}.txt"), tag.as_bytes())
            .await,
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn each_user_lists_only_their_own_rows(db: PgPool) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let a = seed(&app, alice.id, "alice").await;
    let b = seed(&app, bob.id, "bob").await;

    for (user, own, other) in [(&alice, &a, &b), (&bob, &b, &a)] {
        let docs = app.get("/api/documents", &user.access).await;
        let ids: Vec<&str> = docs.body["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![own.document.to_string()]);
        assert!(!docs.body.to_string().contains(&other.document.to_string()));

        let convs = app.get("/api/conversations", &user.access).await;
        let ids: Vec<&str> = convs.body["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![own.conversation.to_string()]);

        let files = app.get("/api/files", &user.access).await;
        let ids: Vec<&str> = files.body["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![own.file.to_string()]);

        // Searching for the other user's words finds nothing.
        let other_name = if user.id == alice.id { "bob" } else { "alice" };
        let search = app
            .get(&format!("/api/documents?q={other_name}"), &user.access)
            .await;
        assert_eq!(search.body["documents"], json!([]));
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn another_users_ids_answer_404_everywhere_and_change_nothing(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let b = seed(&app, bob.id, "bob").await;

    let attempts = [
        (Method::GET, format!("/api/documents/{}", b.document), None),
        (
            Method::GET,
            format!("/api/documents/{}/download", b.document),
            None,
        ),
        (
            Method::PUT,
            format!("/api/documents/{}", b.document),
            Some(json!({"content": "pwned"})),
        ),
        (
            Method::DELETE,
            format!("/api/documents/{}", b.document),
            None,
        ),
        (
            Method::GET,
            format!("/api/conversations/{}", b.conversation),
            None,
        ),
        (
            Method::GET,
            format!("/api/conversations/{}/download", b.conversation),
            None,
        ),
        (
            Method::PUT,
            format!("/api/conversations/{}", b.conversation),
            Some(json!({"title": "pwned"})),
        ),
        (
            Method::DELETE,
            format!("/api/conversations/{}", b.conversation),
            None,
        ),
        (Method::GET, format!("/api/files/{}", b.file), None),
        (Method::GET, format!("/api/files/{}/download", b.file), None),
        (Method::DELETE, format!("/api/files/{}", b.file), None),
    ];
    for (method, uri, body) in attempts {
        let r = app
            .send(method.clone(), &uri, Some(&alice.access), body)
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {}",
            r.body
        );
        assert_eq!(r.code(), "not_found");
    }

    // Bob's things are untouched and still his.
    let doc = app
        .get(&format!("/api/documents/{}", b.document), &bob.access)
        .await;
    assert_eq!(doc.body["content"], "# bob's notes");
    let conv = app
        .get(
            &format!("/api/conversations/{}", b.conversation),
            &bob.access,
        )
        .await;
    assert_eq!(conv.body["title"], "bob's chat");
    assert_eq!(conv.body["messages"].as_array().unwrap().len(), 2);
    let file = app
        .get(&format!("/api/files/{}/download", b.file), &bob.access)
        .await;
    assert_eq!(file.bytes, b"bob");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn row_level_security_hides_rows_from_queries_without_an_owner_filter(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    seed(&app, alice.id, "alice").await;
    seed(&app, bob.id, "bob").await;
    let tables = ["documents", "conversations", "messages", "files", "users"];

    // As the user role with no user set: no rows at all, though rows exist.
    let mut tx = db.begin().await.unwrap();
    sqlx::query("set local role jarvis_user")
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} leaks rows with no user set");
    }
    tx.rollback().await.unwrap();

    // As alice, an unfiltered query sees only alice's rows.
    let mut tx = router::db::user_tx(&db, alice.id).await.unwrap();
    for table in ["documents", "conversations", "messages", "files"] {
        let owners: Vec<Uuid> = sqlx::query(&format!("select distinct owner_id from {table}"))
            .fetch_all(&mut *tx)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(owners, vec![alice.id], "{table}");
    }
    // So does a one-message read as alice.
    for table in ["documents", "conversations", "messages", "files", "users"] {
        let owners: Vec<(Uuid,)> = router::db::user_rows(
            alice.id,
            &format!(
                "select distinct {} from {table}",
                if table == "users" { "id" } else { "owner_id" }
            ),
        )
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(owners, vec![(alice.id,)], "{table} through user_rows");
    }
    // ...and cannot write a row for bob, even by naming him.
    let forged = sqlx::query("insert into documents (owner_id, filename, doc_type, content) values ($1, 'x.md', 'markdown', 'x')")
        .bind(bob.id)
        .execute(&mut *tx)
        .await;
    assert!(forged.is_err(), "RLS let alice write a row owned by bob");
    tx.rollback().await.unwrap();

    // The same unfiltered update as alice leaves bob's rows alone.
    let mut tx = router::db::user_tx(&db, alice.id).await.unwrap();
    let changed = sqlx::query("update documents set content = 'overwritten'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    tx.commit().await.unwrap();
    assert_eq!(changed, 1);
    let bobs: String = sqlx::query_scalar("select content from documents where owner_id = $1")
        .bind(bob.id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(bobs, "# bob's notes");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_users_role_and_id_end_with_their_transaction(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let alice = app.register("alice@example.com").await;
    // One connection, so the next query runs where alice's did.
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.connect_options().as_ref().clone())
        .await
        .unwrap();
    let before: (String, String) = sqlx::query_as(
        "select current_user::text, coalesce(current_setting('app.user_id', true), '')",
    )
    .fetch_one(&one)
    .await
    .unwrap();

    let seen: Vec<(String, String)> = router::db::user_rows(
        alice.id,
        "select current_user::text, current_setting('app.user_id')",
    )
    .fetch_all(&one)
    .await
    .unwrap();
    assert_eq!(
        seen,
        vec![("jarvis_user".to_string(), alice.id.to_string())]
    );
    let after: (String, String) = sqlx::query_as(
        "select current_user::text, coalesce(current_setting('app.user_id', true), '')",
    )
    .fetch_one(&one)
    .await
    .unwrap();
    assert_eq!(
        after, before,
        "a one-message read left alice on the connection"
    );

    let mut tx = router::db::user_tx(&one, alice.id).await.unwrap();
    let inside: (String, String) =
        sqlx::query_as("select current_user::text, current_setting('app.user_id')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(inside, ("jarvis_user".to_string(), alice.id.to_string()));
    tx.commit().await.unwrap();
    let after: (String, String) = sqlx::query_as(
        "select current_user::text, coalesce(current_setting('app.user_id', true), '')",
    )
    .fetch_one(&one)
    .await
    .unwrap();
    assert_eq!(
        after, before,
        "a user transaction left alice on the connection"
    );
}
