//! Which `Origin`s the router trusts: who may open the browser WebSocket, and
//! where billing may send the browser back to.
//!
//! Allowed: no `Origin` at all (not a browser: the token alone decides), an origin
//! equal to the request's own `Host` (the router's own pages), the configured
//! `JARVIS_ALLOWED_ORIGINS`, and by default `http://127.0.0.1:8080`,
//! `http://localhost:8080` and `http://<JARVIS_LISTEN>`. Anything else is refused.
//!
//! Billing's return links never come from `Host` (a client sets it as it likes):
//! [`return_base`] is an `Origin` from the configured list, else the first
//! configured origin, else the listen address.

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
    configured(config, &origin)
}

/// The origins of the configuration: `JARVIS_ALLOWED_ORIGINS` first, then the
/// defaults.
fn configured_origins(config: &Config) -> impl Iterator<Item = String> + '_ {
    config
        .allowed_origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/').to_string())
        .filter(|o| !o.is_empty())
        .chain([
            "http://127.0.0.1:8080".to_string(),
            "http://localhost:8080".to_string(),
            format!("http://{}", config.listen),
        ])
}

/// Whether `origin` is one the configuration names (never one derived from the
/// request's own `Host`).
fn configured(config: &Config, origin: &str) -> bool {
    let origin = origin.trim_end_matches('/');
    configured_origins(config).any(|o| o.eq_ignore_ascii_case(origin))
}

/// Where a page that sends the browser away (Stripe) may send it back to: the
/// request's `Origin` when the configuration names it, else the first configured
/// origin. The `Host` header is never used.
pub fn return_base(config: &Config, headers: &HeaderMap) -> String {
    let from_request = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| configured(config, o))
        .map(|o| o.trim_end_matches('/').to_string());
    from_request
        .or_else(|| configured_origins(config).next())
        .unwrap_or_else(|| format!("http://{}", config.listen))
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
    fn return_links_ignore_the_host_and_foreign_origins() {
        let mut config = Config::defaults();
        config.allowed_origins = vec!["https://jarvis.example.com/".into()];
        let forged = headers(Some("https://evil.example"), "evil.example");
        assert_eq!(return_base(&config, &forged), "https://jarvis.example.com");
        let own = headers(Some("https://jarvis.example.com"), "internal:8080");
        assert_eq!(return_base(&config, &own), "https://jarvis.example.com");
        let bare = Config::defaults();
        assert_eq!(
            return_base(&bare, &headers(None, "evil.example")),
            "http://127.0.0.1:8080"
        );
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
