//! The router serves the built browser app: files, the single-page-app fallback
//! for client routes, and the API's JSON 404 untouched.

mod common;

use axum::http::{Method, StatusCode, header};
use common::TestApp;
use sqlx::PgPool;

const INDEX: &str = "<!doctype html><title>Jarvis</title><div id=root></div>";

fn built_app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("index.html"), INDEX).unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/index-abc123.js"), "console.log(1)").unwrap();
    dir
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_built_app_is_served_at_root_and_client_routes(db: PgPool) {
    let dist = built_app();
    let path = dist.path().to_path_buf();
    let app = TestApp::with_config(db, |c| c.web_dir = Some(path)).await;

    for uri in ["/", "/chat/123", "/documents", "/signin?next=%2Fchat"] {
        let r = app.send(Method::GET, uri, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert_eq!(String::from_utf8_lossy(&r.bytes), INDEX, "{uri}");
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{uri}"
        );
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache", "{uri}");
    }

    let js = app
        .send(Method::GET, "/assets/index-abc123.js", None, None)
        .await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(js.bytes, b"console.log(1)");
    assert!(
        js.headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );

    // A missing file is a 404, not the app.
    let missing = app
        .send(Method::GET, "/assets/nope-123.js", None, None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // The API's own paths keep the JSON 404.
    for uri in ["/api/nope", "/api", "/v1/nope", "/ws/nope"] {
        let r = app.send(Method::GET, uri, None, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(r.code(), "not_found", "{uri}");
    }

    // Path tricks do not leave the directory.
    let r = app
        .send(Method::GET, "/../../../../etc/passwd", None, None)
        .await;
    assert!(!String::from_utf8_lossy(&r.bytes).contains("root:"));
    let r = app
        .send(Method::GET, "/%2e%2e/%2e%2e/etc/passwd", None, None)
        .await;
    assert!(!String::from_utf8_lossy(&r.bytes).contains("root:"));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn without_a_built_app_root_answers_a_hint(db: PgPool) {
    let empty = tempfile::tempdir().expect("temp dir");
    let path = empty.path().join("dist");
    let app = TestApp::with_config(db, |c| c.web_dir = Some(path)).await;
    let r = app.send(Method::GET, "/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&r.bytes);
    assert!(text.contains("npm run build"), "{text}");
    let r = app.send(Method::GET, "/chat/1", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.send(Method::GET, "/api/nope", None, None).await;
    assert_eq!(r.code(), "not_found");
}
