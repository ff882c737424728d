//! The browser app: the files of `router/web/dist`, served for every path the API
//! does not own. Client routes (`/chat/123`) get `index.html` so the app's own
//! router takes over; `/api/…`, `/ws` and `/v1/…` keep their JSON 404. Without a
//! built app, `/` answers a short hint instead of failing.

use std::path::{Path, PathBuf};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::{AppState, Error};

/// Where the built app is: the configured directory, else `router/web/dist` under
/// the working directory, else `web/dist` in this crate's directory.
pub fn web_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    let from_cwd = PathBuf::from("router/web/dist");
    if from_cwd.join("index.html").is_file() {
        return from_cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist")
}

/// Paths that belong to the API side: never answered with the app.
fn is_backend_path(path: &str) -> bool {
    ["/api", "/ws", "/v1"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// The router's fallback: API paths get the JSON 404, everything else the app.
pub async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if is_backend_path(&path) {
        return Error::NotFound("route").into_response();
    }
    let dir = web_dir(state.config.web_dir.as_deref());
    let index = dir.join("index.html");
    if !index.is_file() {
        return missing_app(&path, &dir);
    }
    // A path whose last segment has a dot names a file: a missing one is a 404,
    // not the app. Anything else is a client route.
    let names_a_file = path.rsplit('/').next().is_some_and(|s| s.contains('.'));
    let mut res = if names_a_file {
        ServeDir::new(&dir)
            .oneshot(req)
            .await
            .map(|r| r.map(Body::new))
    } else {
        ServeDir::new(&dir)
            .fallback(ServeFile::new(&index))
            .oneshot(req)
            .await
            .map(|r| r.map(Body::new))
    }
    .unwrap_or_else(|never| match never {});
    // Vite puts a content hash in every asset's name: cache those for good, and
    // make browsers revalidate index.html so a new build shows at once.
    let cache = if path.starts_with("/assets/") && res.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    res
}

fn missing_app(path: &str, dir: &Path) -> Response {
    if path != "/" {
        return Error::NotFound("page").into_response();
    }
    tracing::warn!(dir = %dir.display(), "the browser app is not built");
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Jarvis</title>\
         <p>Jarvis is running, but the browser app is not built in <code>{}</code>.\
         <p>Build it with <code>npm ci &amp;&amp; npm run build</code> in <code>router/web</code> \
         (<code>./scripts/run.sh</code> does this), or point <code>JARVIS_WEB_DIR</code> at a build. \
         The API is at <code>/api</code>.",
        html_escape(&dir.display().to_string())
    );
    (StatusCode::OK, Html(body)).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_paths_are_never_the_app() {
        for p in ["/api", "/api/nope", "/ws", "/v1/messages", "/ws/x"] {
            assert!(is_backend_path(p), "{p}");
        }
        for p in ["/", "/chat/123", "/apiary", "/v1x", "/assets/index.js"] {
            assert!(!is_backend_path(p), "{p}");
        }
    }
}
