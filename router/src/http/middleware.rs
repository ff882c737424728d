//! Layers every request passes through, outermost first: the security headers
//! of every answer (app, API and errors alike; see [`SECURITY_HEADERS`]), a
//! request id (made unless the client sent one, echoed in the response), a
//! tracing span carrying it with the method and route, and the request metrics.

use std::time::Instant;

use axum::http::{HeaderName, HeaderValue, header};
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    middleware::{self, Next},
    response::Response,
};
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

use super::AppState;
use crate::metrics::{RequestLabels, RouteLabels};

/// The policy of every page: the app's own scripts, styles, audio and socket
/// only (the theme script is a file, `web/public/theme.js`, not inline), no
/// plugins, and no framing by any site.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Headers every answer carries unless its handler set its own.
pub const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    // Signed audio URLs carry their signature in the query: never pass them on.
    (header::REFERRER_POLICY, "no-referrer"),
    // Browsers heed it only over HTTPS, which is how the router is deployed.
    (
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    ),
];

/// Wraps every route of `router` (and its fallback) in the layers.
pub fn apply(router: Router<AppState>, state: AppState) -> Router<AppState> {
    let mut router = router;
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let request_id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    route = route_of(req),
                    request_id,
                )
            }))
            .layer(middleware::from_fn_with_state(state, record_metrics)),
    )
}

fn route_of(req: &Request) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = route_of(&req).to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .durations
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
