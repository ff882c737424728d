//! Documents, conversations and files as their owner uses them: list, search,
//! read, edit, delete, download; bad input changes nothing.

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn documents_are_listed_newest_first_and_found_by_words(db: PgPool) {
    let app = TestApp::new(db).await;
    let u = app.register("writer@example.com").await;
    let plan = app
        .insert_document(u.id, "plan.md", "We will grow tomatoes in spring.")
        .await;
    let code = app
        .insert_document(u.id, "fetch.py", "import requests\nprint('weather report')")
        .await;

    let list = app.get("/api/documents", &u.access).await;
    assert_eq!(list.status, StatusCode::OK);
    let docs = list.body["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 2);
    assert!(docs[0].get("content").is_none(), "lists carry no content");
    assert_eq!(docs[0]["size"], docs[0]["size"].as_i64().unwrap());

    // English stemming: "tomato" finds "tomatoes"; filenames are searched too.
    let found = app.get("/api/documents?q=tomato", &u.access).await;
    assert_eq!(found.body["documents"][0]["id"], plan.to_string());
    assert_eq!(found.body["documents"].as_array().unwrap().len(), 1);
    let by_name = app.get("/api/documents?q=fetch.py", &u.access).await;
    assert_eq!(by_name.body["documents"][0]["id"], code.to_string());

    let paged = app.get("/api/documents?limit=1", &u.access).await;
    assert_eq!(paged.body["documents"].as_array().unwrap().len(), 1);
    assert_eq!(paged.body["next_offset"], 1);
    let whole = app.get("/api/documents?limit=2", &u.access).await;
    assert_eq!(whole.body["documents"].as_array().unwrap().len(), 2);
    assert_eq!(
        whole.body["next_offset"],
        json!(null),
        "no empty page is offered"
    );
    let bad = app.get("/api/documents?limit=0", &u.access).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_document_can_be_edited_downloaded_and_deleted(db: PgPool) {
    let app = TestApp::new(db).await;
    let u = app.register("editor@example.com").await;
    let id = app.insert_document(u.id, "draft.md", "first draft").await;
    let uri = format!("/api/documents/{id}");

    let r = app
        .send(
            Method::PUT,
            &uri,
            Some(&u.access),
            Some(json!({"content": "second draft", "filename": "final résumé.md"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["content"], "second draft");
    assert_eq!(r.body["filename"], "final résumé.md");
    assert_eq!(
        app.get(&uri, &u.access).await.body["content"],
        "second draft"
    );

    let dl = app.get(&format!("{uri}/download"), &u.access).await;
    assert_eq!(dl.status, StatusCode::OK);
    assert_eq!(dl.bytes, b"second draft");
    assert_eq!(dl.headers["content-type"], "text/markdown; charset=utf-8");
    let disposition = dl.headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.contains("filename*=UTF-8''final%20r%C3%A9sum%C3%A9.md"),
        "{disposition}"
    );

    let del = app.send(Method::DELETE, &uri, Some(&u.access), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&uri, &u.access).await.status, StatusCode::NOT_FOUND);
    let again = app.send(Method::DELETE, &uri, Some(&u.access), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn bad_edits_are_refused_and_change_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let u = app.register("careful@example.com").await;
    let id = app.insert_document(u.id, "keep.md", "original").await;
    let uri = format!("/api/documents/{id}");
    for body in [
        json!({}),
        json!({"filename": "../../etc/passwd"}),
        json!({"filename": "a\u{0}b"}),
        json!({"filename": ".."}),
        json!({"type": "binary"}),
        json!({"content": "x", "owner_id": "someone"}),
        json!({"content": 42}),
    ] {
        let r = app
            .send(Method::PUT, &uri, Some(&u.access), Some(body.clone()))
            .await;
        assert!(r.status.is_client_error(), "{body} accepted: {}", r.body);
        assert!(r.body["error"]["message"].is_string(), "{}", r.body);
    }
    let not_json = app
        .call(
            axum::http::Request::put(&uri)
                .header("authorization", format!("Bearer {}", u.access))
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let bad_id = app.get("/api/documents/not-a-uuid", &u.access).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    let doc = app.get(&uri, &u.access).await;
    assert_eq!(
        (doc.body["filename"].as_str(), doc.body["content"].as_str()),
        (Some("keep.md"), Some("original"))
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn conversations_are_found_by_title_and_message_words_of_their_owner_only(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let u = app.register("searcher@example.com").await;
    let other = app.register("other@example.com").await;
    let trip = app.insert_conversation(u.id, "Trip ideas").await;
    let cooking = app.insert_conversation(u.id, "Dinner").await;
    let discount = app.insert_conversation(u.id, "Prices").await;
    let theirs = app.insert_conversation(other.id, "Trip ideas").await;
    for (id, owner, text) in [
        (cooking, u.id, "How long do I boil a Pomegranate risotto?"),
        (discount, u.id, "Is 50% off a good deal?"),
        (theirs, other.id, "pomegranate 100% secret"),
    ] {
        sqlx::query(
            "insert into messages (owner_id, conversation_id, role, content) values ($1, $2, 'user', $3)",
        )
        .bind(owner)
        .bind(id)
        .bind(text)
        .execute(&db)
        .await
        .unwrap();
    }
    // The trip is the newest activity.
    sqlx::query("update conversations set updated_at = now() + interval '1 minute' where id = $1")
        .bind(trip)
        .execute(&db)
        .await
        .unwrap();
    let ids = |r: &common::Reply| -> Vec<String> {
        r.body["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };

    // A word of a message, any case; only the owner's conversation.
    let found = app.get("/api/conversations?q=POMEGRANATE", &u.access).await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(ids(&found), [cooking.to_string()]);
    // A word of the title; every word must match somewhere.
    assert_eq!(
        ids(&app.get("/api/conversations?q=trip", &u.access).await),
        [trip.to_string()]
    );
    assert_eq!(
        ids(&app
            .get("/api/conversations?q=boil%20risotto", &u.access)
            .await),
        [cooking.to_string()]
    );
    assert!(ids(&app.get("/api/conversations?q=boil%20trip", &u.access).await).is_empty());
    // Wildcards are literal: "%" matches only a percent sign, "_" only an underscore.
    assert_eq!(
        ids(&app.get("/api/conversations?q=%25", &u.access).await),
        [discount.to_string()]
    );
    assert!(ids(&app.get("/api/conversations?q=_", &u.access).await).is_empty());
    // Another user's words never match; blank is the whole list, newest first.
    assert!(ids(&app.get("/api/conversations?q=secret", &u.access).await).is_empty());
    assert_eq!(
        ids(&app.get("/api/conversations?q=secret", &other.access).await),
        [theirs.to_string()]
    );
    let all = ids(&app.get("/api/conversations?q=%20", &u.access).await);
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], trip.to_string());
    // Several matches: newest activity first.
    let hello = ids(&app.get("/api/conversations?q=hello", &u.access).await);
    assert_eq!(hello.len(), 3);
    assert_eq!(hello[0], trip.to_string());
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn conversations_can_be_read_renamed_downloaded_and_deleted(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let u = app.register("talker@example.com").await;
    let id = app.insert_conversation(u.id, "Trip ideas").await;
    let uri = format!("/api/conversations/{id}");

    let c = app.get(&uri, &u.access).await;
    assert_eq!(c.body["title"], "Trip ideas");
    let roles: Vec<&str> = c.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"]);

    let renamed = app
        .send(
            Method::PUT,
            &uri,
            Some(&u.access),
            Some(json!({"title": "Lisbon trip"})),
        )
        .await;
    assert_eq!(renamed.body["title"], "Lisbon trip");
    let empty = app
        .send(
            Method::PUT,
            &uri,
            Some(&u.access),
            Some(json!({"title": "  "})),
        )
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);

    let md = app.get(&format!("{uri}/download"), &u.access).await;
    let text = String::from_utf8(md.bytes).unwrap();
    assert!(text.starts_with("# Lisbon trip\n"), "{text}");
    assert!(
        text.contains("## You\n\nhello") && text.contains("## Jarvis\n\nhi there"),
        "{text}"
    );

    assert_eq!(
        app.send(Method::DELETE, &uri, Some(&u.access), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let left: i64 = sqlx::query_scalar("select count(*) from messages where conversation_id = $1")
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(left, 0, "messages go with their conversation");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn files_download_from_storage_and_delete_removes_the_object(db: PgPool) {
    let app = TestApp::new(db).await;
    let u = app.register("files@example.com").await;
    let id = app.insert_file(u.id, "out/report.txt", b"the report").await;

    let meta = app.get(&format!("/api/files/{id}"), &u.access).await;
    assert_eq!(meta.body["filename"], "report.txt");
    assert_eq!(meta.body["path"], "out/report.txt");
    assert_eq!(meta.body["kind"], "workspace");
    assert_eq!(meta.body["size"], 10);

    let dl = app
        .get(&format!("/api/files/{id}/download"), &u.access)
        .await;
    assert_eq!(dl.bytes, b"the report");
    assert_eq!(dl.headers["content-length"], "10");
    assert_eq!(dl.headers["x-content-type-options"], "nosniff");

    let object = app
        .storage_dir
        .path()
        .join(format!("users/{}/workspace/out/report.txt", u.id));
    assert!(object.exists());
    let del = app
        .send(
            Method::DELETE,
            &format!("/api/files/{id}"),
            Some(&u.access),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert!(
        !object.exists(),
        "the stored object is removed with the row"
    );
    assert_eq!(
        app.get(&format!("/api/files/{id}"), &u.access).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Straight to Postgres a page read is a statement prepared once per connection
/// (`db::user_rows`): its cached plan must still show each user only their own
/// rows, even for a query that forgot its owner filter.
#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_prepared_page_read_shows_each_user_only_their_own_rows(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let mut theirs = std::collections::HashMap::new();
    for (user, n) in [(&alice, 3), (&bob, 2)] {
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(
                app.insert_document(user.id, &format!("d{i}.md"), "text")
                    .await,
            );
        }
        ids.sort();
        theirs.insert(user.id, ids);
    }
    // One connection: every read below runs the same prepared statement, past
    // the first few executions (custom plans) into the generic plan.
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*db.connect_options()).clone())
        .await
        .expect("pool");
    for round in 0..8 {
        for user in [&alice, &bob] {
            let mut seen: Vec<(uuid::Uuid,)> =
                router::db::user_rows(user.id, "select id from documents order by id")
                    .fetch_all(&one)
                    .await
                    .expect("read");
            seen.sort();
            let seen: Vec<_> = seen.into_iter().map(|(id,)| id).collect();
            assert_eq!(seen, theirs[&user.id], "round {round}: {}", user.email);
        }
    }
    let prepared: i64 = sqlx::query_scalar(
        "select count(*) from pg_prepared_statements where name like 'jarvis\\_%'",
    )
    .fetch_one(&one)
    .await
    .expect("prepared statements");
    assert_eq!(prepared, 1, "the read was prepared once and reused");
}
