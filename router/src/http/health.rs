//! Liveness (`/healthz`), readiness (`/readyz`: the database answers and the
//! storage bucket exists) and the
//! Prometheus metrics (`/metrics`). The first two need no token. `/metrics` needs
//! `Authorization: Bearer $JARVIS_METRICS_TOKEN` when that is set; without it,
//! only a peer on loopback that came through no proxy (no `Forwarded`,
//! `X-Forwarded-For` or `X-Real-IP`) gets it, so a reverse proxy on the same
//! machine does not open it to the world. The sandboxes' listener has no `/metrics`.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppState, Error, Result};
use crate::storage::StorageError;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match ready(&state).await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        // Said in full (an internal error's message is hidden from clients): the
        // operator reading a failed probe learns which dependency and why.
        Err(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not ready",
                "error": {"code": "unavailable", "message": message},
            })),
        )
            .into_response(),
    }
}

/// Whether the database answers and the storage bucket exists; what is wrong if not.
async fn ready(state: &AppState) -> std::result::Result<(), String> {
    // language=PostgreSQL
    let ping = crate::db::query("select 1").execute(&state.db);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database not ready");
            return Err("the database is not reachable".into());
        }
        Err(_) => return Err("the database did not answer in time".into()),
    }
    match tokio::time::timeout(Duration::from_secs(5), state.storage.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ StorageError::NoBucket(_))) => {
            tracing::warn!(error = %e, "storage not ready");
            Err(e.to_string())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "storage not ready");
            Err("the file storage is not reachable".into())
        }
        Err(_) => Err("the file storage did not answer in time".into()),
    }
}

/// Headers a reverse proxy adds: their presence means the peer is not the client.
const PROXY_HEADERS: &[&str] = &["forwarded", "x-forwarded-for", "x-real-ip"];

async fn metrics(State(state): State<AppState>, req: Request) -> Result<impl IntoResponse> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    may_read_metrics(state.config.metrics_token(), req.headers(), peer)?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    ))
}

/// Whether a request may read `/metrics`: the configured bearer token, or, with
/// none configured, a direct peer on loopback.
fn may_read_metrics(
    token: Option<&str>,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<()> {
    if let Some(expected) = token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let matches = given.is_some_and(|given| {
            bool::from(
                Sha256::digest(given.as_bytes())[..]
                    .ct_eq(&Sha256::digest(expected.as_bytes())[..]),
            )
        });
        return if matches {
            Ok(())
        } else {
            Err(Error::unauthorized(
                "send the metrics token: `Authorization: Bearer $JARVIS_METRICS_TOKEN`",
            ))
        };
    }
    let proxied = PROXY_HEADERS.iter().any(|h| headers.contains_key(*h));
    if peer.is_some_and(|ip| ip.is_loopback()) && !proxied {
        return Ok(());
    }
    Err(Error::Forbidden {
        code: "metrics_forbidden",
        message: "/metrics answers only this machine; set JARVIS_METRICS_TOKEN to scrape it \
                  from elsewhere"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn without_a_token_only_direct_loopback_peers_read_metrics() {
        let none = HeaderMap::new();
        assert!(may_read_metrics(None, &none, LOOPBACK).is_ok());
        assert!(may_read_metrics(None, &none, Some(IpAddr::V6(Ipv6Addr::LOCALHOST))).is_ok());
        assert!(may_read_metrics(None, &none, REMOTE).is_err());
        assert!(may_read_metrics(None, &none, None).is_err(), "unknown peer");
        let proxied = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert!(may_read_metrics(None, &proxied, LOOPBACK).is_err());
    }

    #[test]
    fn with_a_token_only_the_token_reads_metrics() {
        let right = headers(&[("authorization", "Bearer s3cret")]);
        let wrong = headers(&[("authorization", "Bearer s3cre")]);
        assert!(may_read_metrics(Some("s3cret"), &right, REMOTE).is_ok());
        assert!(may_read_metrics(Some("s3cret"), &wrong, REMOTE).is_err());
        assert!(
            may_read_metrics(Some("s3cret"), &HeaderMap::new(), LOOPBACK).is_err(),
            "loopback needs the token too once one is set"
        );
    }
}
