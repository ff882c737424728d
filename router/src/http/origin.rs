//! Which `Origin`s the router trusts: who may open the browser WebSocket, and
//! where billing may send the browser back to.
//!
//! Allowed: no `Origin` at all (not a browser: the token alone decides), an origin
//! equal to the request's own `Host` (the router's own pages), the configured
//! `JARVIS_ALLOWED_ORIGINS`, and by default `http://127.0.0.1:8080`,
//! `http://localhost:8080` and `http://<JARVIS_LISTEN>`. Anything else is refused.

use axum::http::{HeaderMap, header};

use crate::config::Config;

/// Whether the request's `Origin` may open a connection.
pub fn allowed(config: &Config, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        let host = host.to_ascii_lowercase();
        if origin == format!("http://{host}") || origin == format!("https://{host}") {
            return true;
        }
    }
    let defaults = [
        "http://127.0.0.1:8080".to_string(),
        "http://localhost:8080".to_string(),
        format!("http://{}", config.listen),
    ];
    defaults
        .iter()
        .chain(config.allowed_origins.iter())
        .any(|o| o.trim().trim_end_matches('/').eq_ignore_ascii_case(&origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn the_routers_own_origin_is_allowed_and_a_foreign_one_is_not() {
        let config = Config::defaults();
        assert!(allowed(
            &config,
            &headers(Some("http://127.0.0.1:9999"), "127.0.0.1:9999")
        ));
        assert!(allowed(
            &config,
            &headers(Some("http://localhost:8080"), "example")
        ));
        assert!(allowed(&config, &headers(None, "example")));
        assert!(!allowed(
            &config,
            &headers(Some("https://evil.example"), "127.0.0.1:8080")
        ));
    }

    #[test]
    fn configured_origins_are_allowed() {
        let mut config = Config::defaults();
        config.allowed_origins = vec!["https://jarvis.example.com".into()];
        assert!(allowed(
            &config,
            &headers(Some("https://jarvis.example.com"), "internal:8080")
        ));
        assert!(!allowed(
            &config,
            &headers(Some("https://jarvis.example.org"), "internal:8080")
        ));
    }
}
