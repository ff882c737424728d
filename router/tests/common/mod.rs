//! Test support: an in-process router on a fresh database, request helpers, and
//! fixtures. Each test gets its own database from `#[sqlx::test]`.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use router::{
    config::Config,
    http::{AppState, app, sandbox_app},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// A password that passes validation.
pub const PASSWORD: &str = "correct-horse-battery";

/// The router under test, with its state and database.
pub struct TestApp {
    pub state: AppState,
    /// The public app (`JARVIS_LISTEN`).
    pub router: Router,
    /// The sandboxes' app (the unix socket, `JARVIS_SANDBOX_LISTEN`): `/v1/…`.
    pub sandbox: Router,
    pub db: PgPool,
    /// Keeps the storage directory alive for the test.
    pub storage_dir: tempfile::TempDir,
}

/// A response: status, headers and body (JSON when it parses, else a string).
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub bytes: Vec<u8>,
}

/// The first refused reply of `call`, made again and again after a change to an
/// account behind this router's back (another router's webhook or usage, an
/// edit in the database), failing the test if a call started later than a
/// router remembers an account (`router::http::standing::STANDING_TTL`) after
/// the change is still answered 200: what the router remembered was read before
/// the change, so by then it is read again.
#[allow(dead_code)]
pub async fn refused_soon<F, Fut>(mut call: F) -> Reply
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let changed = std::time::Instant::now();
    loop {
        let started = std::time::Instant::now();
        let reply = call().await;
        if reply.status != StatusCode::OK {
            return reply;
        }
        assert!(
            started.duration_since(changed) < router::http::standing::STANDING_TTL,
            "a call started {:?} after the change was still answered 200",
            started.duration_since(changed)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Reply {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A registered user and their tokens.
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    /// A router with built-in accounts and default settings.
    pub async fn new(db: PgPool) -> Self {
        Self::with_config(db, |_| {}).await
    }

    /// A router whose configuration `tweak` adjusts.
    pub async fn with_config(db: PgPool, tweak: impl FnOnce(&mut Config)) -> Self {
        // Logs show in a failing test's output (RUST_LOG filters them).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,router=info".into()),
            )
            .with_test_writer()
            .try_init();
        let storage_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::defaults();
        config.storage = format!("file:{}", storage_dir.path().display());
        config.anthropic_api_key = Some("sk-ant-test-key".into());
        // Every test's requests come from one address (no socket): sign-up limits
        // are for the tests that are about them to set.
        config.signups_per_address_per_hour = 10_000;
        config.signups_per_network_per_hour = 10_000;
        tweak(&mut config);
        let state = AppState::new(config, db.clone())
            .await
            .expect("state builds");
        let router = app(state.clone());
        let sandbox = sandbox_app(state.clone());
        Self {
            state,
            router,
            sandbox,
            db,
            storage_dir,
        }
    }

    /// Sends a request; `body` is sent as JSON when given.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request builds");
        self.call(req).await
    }

    /// Sends a prepared request to the public app.
    pub async fn call(&self, req: Request<Body>) -> Reply {
        reply_of(&self.router, req).await
    }

    /// Sends a prepared request to the sandboxes' app.
    pub async fn call_sandbox(&self, req: Request<Body>) -> Reply {
        reply_of(&self.sandbox, req).await
    }

    /// `GET /metrics` from a peer on loopback (as a scraper on the same machine).
    pub async fn metrics(&self) -> Reply {
        let mut req = Request::get("/metrics")
            .body(Body::empty())
            .expect("request builds");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                40000,
            ))));
        self.call(req).await
    }

    pub async fn get(&self, uri: &str, token: &str) -> Reply {
        self.send(Method::GET, uri, Some(token), None).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> Reply {
        self.send(Method::POST, uri, None, Some(body)).await
    }

    /// POSTs `body` as JSON from the client address `ip` (the peer address the
    /// router would see on a socket).
    pub async fn post_from(&self, ip: &str, uri: &str, body: Value) -> Reply {
        let peer: std::net::SocketAddr = (
            ip.parse::<std::net::IpAddr>().expect("an IP address"),
            40000,
        )
            .into();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request builds");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        self.call(req).await
    }

    /// Marks `user`'s address verified, as its mailed link would (a fixture for
    /// tests about something else; `auth.rs` follows the real link).
    pub async fn verify_email(&self, user: Uuid) {
        sqlx::query("update users set email_verified_at = now() where id = $1")
            .bind(user)
            .execute(&self.db)
            .await
            .expect("verified");
    }

    /// Registers `email` with [`PASSWORD`].
    pub async fn register(&self, email: &str) -> User {
        let r = self
            .post(
                "/api/auth/register",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "register {email}: {}",
            r.body
        );
        user_from(&r.body)
    }

    /// Inserts a document for `owner` directly (the agent's path comes later).
    pub async fn insert_document(&self, owner: Uuid, filename: &str, content: &str) -> Uuid {
        sqlx::query_scalar(
            "insert into documents (owner_id, filename, doc_type, content) values ($1, $2, 'markdown', $3) returning id",
        )
        .bind(owner)
        .bind(filename)
        .bind(content)
        .fetch_one(&self.db)
        .await
        .expect("document inserted")
    }

    /// Inserts a conversation with one exchange for `owner`.
    pub async fn insert_conversation(&self, owner: Uuid, title: &str) -> Uuid {
        let id: Uuid = sqlx::query_scalar(
            "insert into conversations (owner_id, title) values ($1, $2) returning id",
        )
        .bind(owner)
        .bind(title)
        .fetch_one(&self.db)
        .await
        .expect("conversation inserted");
        sqlx::query(
            "insert into messages (owner_id, conversation_id, role, content) values ($1, $2, 'user', 'hello'), ($1, $2, 'assistant', 'hi there')",
        )
        .bind(owner)
        .bind(id)
        .execute(&self.db)
        .await
        .expect("messages inserted");
        id
    }

    /// Stores `bytes` as a workspace file of `owner`.
    pub async fn insert_file(&self, owner: Uuid, path: &str, bytes: &[u8]) -> Uuid {
        let key = format!("users/{owner}/workspace/{path}");
        self.state
            .storage
            .put(&key, bytes.to_vec().into())
            .await
            .expect("object stored");
        sqlx::query_scalar(
            "insert into files (owner_id, kind, path, storage_key, size, content_type) values ($1, 'workspace', $2, $3, $4, 'text/plain') returning id",
        )
        .bind(owner)
        .bind(path)
        .bind(&key)
        .bind(bytes.len() as i64)
        .fetch_one(&self.db)
        .await
        .expect("file row inserted")
    }
}

/// Sends `req` to `router` and reads the whole answer.
async fn reply_of(router: &Router, req: Request<Body>) -> Reply {
    let response = router.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body reads")
        .to_bytes()
        .to_vec();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply {
        status,
        headers,
        body,
        bytes,
    }
}

/// The user and tokens of a session body.
pub fn user_from(body: &Value) -> User {
    User {
        id: body["user"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("user id"),
        email: body["user"]["email"].as_str().expect("email").to_string(),
        access: body["access_token"]
            .as_str()
            .expect("access token")
            .to_string(),
        refresh: body["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_string(),
    }
}

/// The payload of a JWT, unverified (for asserting on what the router issued).
pub fn jwt_payload(token: &str) -> Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// A real router on a socket with real local sandboxes and a fake model upstream.
pub mod live;

/// The real router binary as a process, and a plain WebSocket client.
pub mod process;

/// A plain TCP load balancer (a Service) in front of router replicas.
pub mod balancer;

/// Numbered sandbox frames of one conversation, and the browser's view of them.
pub mod frames;

/// A fake Stripe API that checks requests like Stripe.
pub mod stripe;

/// A fake SMTP server speaking the real protocol.
pub mod smtp;

/// Voice: audio checks and fake TTS providers.
pub mod voice;

/// Debian's PgBouncer in transaction mode in front of the local Postgres.
pub mod pgbouncer;

/// The kubernetes backend's test cluster: fake API server, operator, two
/// router replicas, and a fake kubelet running pods as sandbox processes.
pub mod kube_cluster;

/// `POST /api/files` as a browser sends it: one multipart part named `file`
/// with the file name `name` (bytes, so tests can send what no browser would)
/// and `content_type`, authorised by `token`.
pub fn upload_request(
    token: &str,
    name: &[u8],
    content_type: &str,
    content: &[u8],
) -> Request<Body> {
    const BOUNDARY: &str = "jarvis-test-upload-boundary-7d1";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"")
            .as_bytes(),
    );
    body.extend_from_slice(name);
    body.extend_from_slice(format!("\"\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Request::post("/api/files")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body))
        .expect("request")
}
