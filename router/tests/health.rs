//! Health, readiness, metrics, request ids and the shape of errors.

mod common;

use axum::http::{Method, Request, StatusCode};
use common::TestApp;
use sqlx::PgPool;

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn health_and_readiness_answer_without_a_token(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let h = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(h.status, StatusCode::OK);
    let r = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);

    // With the database gone, ready says so.
    db.close().await;
    let r = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "unavailable");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn metrics_count_requests_by_route_pattern(db: PgPool) {
    let app = TestApp::new(db).await;
    let u = app.register("metrics@example.com").await;
    app.get(
        &format!("/api/documents/{}", uuid::Uuid::new_v4()),
        &u.access,
    )
    .await;
    let m = app.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(m.status, StatusCode::OK);
    let text = String::from_utf8(m.bytes).unwrap();
    assert!(
        text.contains("# TYPE jarvis_http_requests counter"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"jarvis_http_requests_total{method="GET",route="/api/documents/{id}",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(!text.contains(&u.id.to_string()), "ids never become labels");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn every_response_carries_a_request_id(db: PgPool) {
    let app = TestApp::new(db).await;
    let r = app.send(Method::GET, "/healthz", None, None).await;
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let given = app
        .call(
            Request::get("/healthz")
                .header("x-request-id", "trace-me-42")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(given.headers["x-request-id"], "trace-me-42");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn unknown_routes_answer_a_json_404(db: PgPool) {
    let app = TestApp::new(db).await;
    let r = app.send(Method::GET, "/api/nothing-here", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    assert!(r.body["error"]["message"].is_string());
}
