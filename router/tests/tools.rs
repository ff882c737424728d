//! The Jarvis tools a sandbox calls (`router::tools::handle`): documents saved,
//! listed, searched, read and updated for the sandbox's user only; bad calls
//! change nothing.

use std::time::Duration;

use router::tools::{self, ToolError};
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

/// One call, bounded in time.
async fn call(db: &PgPool, user: Uuid, method: &str, params: Value) -> Result<Value, ToolError> {
    tokio::time::timeout(
        Duration::from_secs(10),
        tools::handle(db, user, None, method, params),
    )
    .await
    .expect("tool call answers in time")
}

async fn document_count(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from documents")
        .fetch_one(db)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn documents_are_saved_read_updated_listed_and_found(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let saved = call(
        &db,
        u,
        "save_document",
        json!({"filename": "plan.md", "content": "We will grow tomatoes.", "type": "markdown"}),
    )
    .await
    .expect("saved");
    assert_eq!(saved["filename"], "plan.md");
    let id = saved["id"].as_str().expect("id").to_string();
    assert_eq!(saved.as_object().map(|o| o.len()), Some(2), "{saved}");

    let read = call(&db, u, "read_document", json!({"id": id}))
        .await
        .expect("read");
    assert_eq!(
        read,
        json!({"id": id, "filename": "plan.md", "type": "markdown", "content": "We will grow tomatoes."})
    );

    let updated = call(
        &db,
        u,
        "update_document",
        json!({"id": id, "content": "We will grow peppers."}),
    )
    .await
    .expect("updated");
    assert_eq!(updated, json!({"id": id, "filename": "plan.md"}));
    let read = call(&db, u, "read_document", json!({"id": id}))
        .await
        .expect("read");
    assert_eq!(read["content"], "We will grow peppers.");

    call(
        &db,
        u,
        "save_document",
        json!({"filename": "fetch.py", "content": "print('weather')", "type": "code"}),
    )
    .await
    .expect("saved");
    let list = call(&db, u, "list_documents", json!({}))
        .await
        .expect("listed");
    let docs = list["documents"].as_array().expect("documents");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["filename"], "fetch.py", "newest first");
    assert_eq!(docs[0]["type"], "code");
    assert!(docs[0]["updated_at"].is_string());
    assert!(docs[0].get("content").is_none(), "lists carry no content");
    // `null` params are taken as `{}`.
    assert!(call(&db, u, "list_documents", Value::Null).await.is_ok());

    let found = call(&db, u, "search_documents", json!({"query": "pepper"}))
        .await
        .expect("searched");
    let found = found["documents"].as_array().expect("documents");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id);
    assert!(
        found[0]["snippet"]
            .as_str()
            .unwrap_or("")
            .contains("peppers")
    );
    let none = call(&db, u, "search_documents", json!({"query": "tomato"}))
        .await
        .expect("searched");
    assert_eq!(none["documents"], json!([]));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn another_users_documents_are_not_found_and_unchanged(db: PgPool) {
    let a = user(&db, "a@example.com").await;
    let b = user(&db, "b@example.com").await;
    let saved = call(
        &db,
        a,
        "save_document",
        json!({"filename": "secret.txt", "content": "a's secret", "type": "text"}),
    )
    .await
    .expect("saved");
    let id = saved["id"].as_str().expect("id");

    let read = call(&db, b, "read_document", json!({"id": id})).await;
    assert!(matches!(read, Err(ToolError::NotFound(_))), "{read:?}");
    let upd = call(
        &db,
        b,
        "update_document",
        json!({"id": id, "content": "b was here"}),
    )
    .await;
    let err = upd.expect_err("refused");
    assert_eq!(err.code(), "not_found");
    assert_eq!(err.body().code, "not_found");

    let list = call(&db, b, "list_documents", json!({}))
        .await
        .expect("listed");
    assert_eq!(list["documents"], json!([]));
    let found = call(&db, b, "search_documents", json!({"query": "secret"}))
        .await
        .expect("searched");
    assert_eq!(found["documents"], json!([]));

    let still = call(&db, a, "read_document", json!({"id": id}))
        .await
        .expect("read");
    assert_eq!(still["content"], "a's secret");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn bad_calls_get_clear_errors_and_change_nothing(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let cases = [
        ("delete_everything", json!({}), "unknown_method"),
        (
            "save_document",
            json!({"filename": "a.md", "content": "x"}),
            "invalid_params",
        ),
        (
            "save_document",
            json!({"filename": "a.md", "content": "x", "type": "pdf"}),
            "invalid_params",
        ),
        (
            "save_document",
            json!({"filename": "../../etc/passwd", "content": "x", "type": "text"}),
            "invalid_params",
        ),
        (
            "save_document",
            json!({"filename": "a\nb", "content": "x", "type": "text"}),
            "invalid_params",
        ),
        (
            "save_document",
            json!({"filename": "a.md", "content": "x", "type": "text", "owner_id": Uuid::new_v4()}),
            "invalid_params",
        ),
        (
            "save_document",
            json!({"filename": "big.txt", "content": "x".repeat(tools::MAX_CONTENT_BYTES + 1), "type": "text"}),
            "too_large",
        ),
        ("save_document", json!(["a.md"]), "invalid_params"),
        (
            "read_document",
            json!({"id": "not-a-uuid"}),
            "invalid_params",
        ),
        ("read_document", json!({"id": Uuid::new_v4()}), "not_found"),
        (
            "update_document",
            json!({"id": Uuid::new_v4(), "content": "x"}),
            "not_found",
        ),
        (
            "search_documents",
            json!({"query": "   "}),
            "invalid_params",
        ),
        (
            "list_documents",
            json!({"all_users": true}),
            "invalid_params",
        ),
    ];
    for (method, params, code) in cases {
        let err = call(&db, u, method, params.clone())
            .await
            .expect_err(method);
        assert_eq!(err.code(), code, "{method} {params}: {err}");
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(document_count(&db).await, 0);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn speak_reports_that_voice_is_unavailable(db: PgPool) {
    let u = user(&db, "a@example.com").await;
    let err = call(&db, u, "speak", json!({"text": "hello"}))
        .await
        .expect_err("no voice");
    assert_eq!(err.code(), "voice_unavailable");
    let err = call(&db, u, "speak", json!({}))
        .await
        .expect_err("bad params");
    assert_eq!(err.code(), "invalid_params");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn saved_documents_link_only_the_users_own_conversation(db: PgPool) {
    let a = user(&db, "a@example.com").await;
    let b = user(&db, "b@example.com").await;
    let conv_a: Uuid =
        sqlx::query_scalar("insert into conversations (owner_id) values ($1) returning id")
            .bind(a)
            .fetch_one(&db)
            .await
            .expect("conversation");
    let params = json!({"filename": "n.txt", "content": "x", "type": "text"});
    let mine = tools::handle(&db, a, Some(conv_a), "save_document", params.clone())
        .await
        .expect("saved");
    let theirs = tools::handle(&db, b, Some(conv_a), "save_document", params)
        .await
        .expect("saved, unlinked");
    let link = |id: &Value| {
        let id: Uuid = id.as_str().and_then(|s| s.parse().ok()).expect("uuid");
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, Option<Uuid>>(
                "select conversation_id from documents where id = $1",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .expect("row")
        }
    };
    assert_eq!(link(&mine["id"]).await, Some(conv_a));
    assert_eq!(link(&theirs["id"]).await, None);
}
