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
    let m = app.metrics().await;
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

/// `GET /metrics` from `peer`, with `headers`.
async fn metrics_from(app: &TestApp, peer: [u8; 4], headers: &[(&str, &str)]) -> common::Reply {
    let mut req = Request::get("/metrics");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Default::default()).unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            peer, 51000,
        ))));
    app.call(req).await
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn metrics_answer_only_this_machine_without_a_token(db: PgPool) {
    let app = TestApp::new(db).await;
    let local = metrics_from(&app, [127, 0, 0, 1], &[]).await;
    assert_eq!(local.status, StatusCode::OK);
    for (peer, headers) in [
        ([10, 0, 0, 7], vec![]),
        ([203, 0, 113, 9], vec![]),
        // A reverse proxy on this machine forwards the world's requests.
        ([127, 0, 0, 1], vec![("x-forwarded-for", "203.0.113.9")]),
        ([127, 0, 0, 1], vec![("forwarded", "for=203.0.113.9")]),
    ] {
        let r = metrics_from(&app, peer, &headers).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{peer:?} {headers:?}");
        assert_eq!(r.code(), "metrics_forbidden");
        assert!(!String::from_utf8_lossy(&r.bytes).contains("# TYPE"));
    }
    // No peer address at all (not a TCP connection) is not trusted either.
    let r = app.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn metrics_require_the_token_when_one_is_set(db: PgPool) {
    let app = TestApp::with_config(db, |c| {
        c.metrics_token = Some("scrape-secret-1".into());
    })
    .await;
    for (peer, auth) in [
        ([127, 0, 0, 1], None),
        ([10, 0, 0, 7], None),
        ([10, 0, 0, 7], Some("Bearer scrape-secret-2")),
        ([10, 0, 0, 7], Some("Basic scrape-secret-1")),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = metrics_from(&app, peer, &headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{peer:?} {auth:?}");
        assert_eq!(r.code(), "unauthorized");
    }
    let r = metrics_from(
        &app,
        [10, 0, 0, 7],
        &[("authorization", "Bearer scrape-secret-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&r.bytes).contains("# TYPE jarvis_http_requests counter"));
}
