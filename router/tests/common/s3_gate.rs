//! An S3 server that refuses some writes: the real `s3s-fs` ([`super::s3`])
//! behind a small HTTP proxy in the test process. The proxy forwards every
//! request as it came (the `Host` header too, so signatures still match) and
//! answers the writes a [`Rule`] picks with the real S3 error XML instead
//! ([`Rule::SupabaseKeys`]: every key Supabase Storage's `isValidKey` refuses).
//! It also records the Content-Type of every object written through it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{Method, StatusCode, header},
    response::Response,
};
use router::storage::{S3Config, Storage};

use super::s3::S3Server;

/// What the gate answers instead of storing.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// `EntityTooLarge`, with this status (AWS says 400, Supabase Storage 413).
    TooLarge(u16),
    /// `InvalidKey` (400): Supabase Storage's answer to a key outside its rule.
    InvalidKey,
    /// `NoSuchBucket` (404).
    NoSuchBucket,
}

impl Answer {
    fn status(self) -> u16 {
        match self {
            Self::TooLarge(status) => status,
            Self::InvalidKey => 400,
            Self::NoSuchBucket => 404,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::TooLarge(_) => "EntityTooLarge",
            Self::InvalidKey => "InvalidKey",
            Self::NoSuchBucket => "NoSuchBucket",
        }
    }
}

/// Which writes (a PUT, or the start of a multipart upload) the gate refuses.
#[derive(Clone, Debug)]
pub enum Rule {
    /// A write whose (still percent-encoded) path contains this text.
    KeyContains(String, Answer),
    /// A PUT whose body is larger than this many bytes.
    LargerThan(u64, Answer),
    /// The PUT of this part (`partNumber`, from 1) of a multipart upload.
    Part(u32, Answer),
    /// A write whose key Supabase Storage refuses: one with a character outside
    /// `^[A-Za-z0-9_/!.*'() &$=@;:+,?-]*$` once the URL is decoded
    /// ([`Answer::InvalidKey`]).
    SupabaseKeys,
}

/// Whether Supabase Storage's `isValidKey` accepts the object of the request
/// path `path` (`/bucket/key`, percent-encoded).
pub fn supabase_accepts(path: &str) -> bool {
    let Ok(decoded) = percent_encoding::percent_decode_str(path).decode_utf8() else {
        return false;
    };
    decoded
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_/!.*'() &$=@;:+,?-".contains(c))
}

impl Rule {
    /// What the gate answers a write to `path` of `size` bytes (`None` for the
    /// start of a multipart upload, which has no body yet).
    fn answer(&self, path: &str, query: &str, size: Option<u64>) -> Option<Answer> {
        match self {
            Self::Part(n, answer)
                if size.is_some() && query.split('&').any(|q| q == format!("partNumber={n}")) =>
            {
                Some(*answer)
            }
            Self::KeyContains(text, answer) if path.contains(text.as_str()) => Some(*answer),
            Self::LargerThan(limit, answer) if size.is_some_and(|s| s > *limit) => Some(*answer),
            Self::SupabaseKeys if !supabase_accepts(path) => Some(Answer::InvalidKey),
            _ => None,
        }
    }
}

/// A write that went through the gate (stored or refused).
#[derive(Clone, Debug)]
pub struct Write {
    /// The request path (`/bucket/key`, percent-encoded).
    pub path: String,
    /// The Content-Type it was sent with.
    pub content_type: Option<String>,
    /// Whether the gate refused it.
    pub refused: bool,
}

impl Write {
    /// The request path decoded: `/bucket/key` as the server stores it.
    pub fn decoded_path(&self) -> String {
        percent_encoding::percent_decode_str(&self.path)
            .decode_utf8_lossy()
            .into_owned()
    }
}

struct Shared {
    upstream: String,
    rules: Vec<Rule>,
    writes: Mutex<Vec<Write>>,
    aborted: Mutex<Vec<String>>,
    client: reqwest::Client,
}

/// The gate in front of a running `s3s-fs`; stops with the test's runtime.
pub struct S3Gate {
    /// The underlying server (kept alive).
    pub server: S3Server,
    /// The gate's address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Gate {
    /// Starts `s3s-fs` and the gate in front of it with `rules`.
    pub async fn start(rules: Vec<Rule>) -> Self {
        let server = S3Server::start().await;
        let upstream = server
            .config
            .endpoint
            .clone()
            .expect("s3s-fs has an endpoint");
        let shared = Arc::new(Shared {
            upstream,
            rules,
            writes: Mutex::default(),
            aborted: Mutex::default(),
            client: reqwest::Client::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            server,
            addr,
            shared,
            task,
        }
    }

    /// The gate's endpoint URL (`http://…`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Settings for [`Storage::s3`] through the gate, on `bucket`.
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            endpoint: Some(self.endpoint()),
            ..self.server.config.clone()
        }
    }

    /// A storage handle on the server's bucket, through the gate.
    pub fn storage(&self) -> Storage {
        Storage::s3(&self.config(&self.server.config.bucket)).expect("S3 storage opens")
    }

    /// The paths of the multipart uploads aborted so far.
    pub fn aborted(&self) -> Vec<String> {
        self.shared
            .aborted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every write seen so far.
    pub fn writes(&self) -> Vec<Write> {
        self.shared
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn s3_error(answer: Answer, path: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code>\
         <Message>refused by the test gate</Message><Resource>{path}</Resource>\
         <RequestId>s3-gate</RequestId></Error>",
        answer.code()
    );
    Response::builder()
        .status(answer.status())
        .header(header::CONTENT_TYPE, "application/xml")
        .body(Body::from(body))
        .expect("response builds")
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    // Objects are written by PUT (whole, or a part) and begun by POST ?uploads.
    let put = parts.method == Method::PUT;
    let begins = parts.method == Method::POST && query.split('&').any(|q| q == "uploads");
    if put || begins {
        let size = put.then_some(body.len() as u64);
        let answer = shared
            .rules
            .iter()
            .find_map(|rule| rule.answer(&path, &query, size));
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Parts of a multipart upload carry no Content-Type: its start does.
        let write = (!query.contains("partNumber")).then(|| Write {
            path: path.clone(),
            content_type,
            refused: answer.is_some(),
        });
        if let Some(answer) = answer {
            shared.record(write);
            return s3_error(answer, &path);
        }
        // Recorded once the server answered: a write seen is a write done.
        let response = relay(&shared, parts, body).await;
        shared.record(write);
        return response;
    }
    if parts.method == Method::DELETE && query.split('&').any(|q| q.starts_with("uploadId=")) {
        shared
            .aborted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.clone());
    }
    relay(&shared, parts, body).await
}

impl Shared {
    fn record(&self, write: Option<Write>) {
        if let Some(write) = write {
            self.writes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(write);
        }
    }
}

/// Forwards the request to the real server and its answer back.
async fn relay(
    shared: &Shared,
    parts: axum::http::request::Parts,
    body: axum::body::Bytes,
) -> Response {
    let path = parts.uri.path();
    let url = match parts.uri.path_and_query() {
        Some(pq) => format!("{}{pq}", shared.upstream),
        None => format!("{}{path}", shared.upstream),
    };
    let mut upstream = shared.client.request(parts.method.clone(), url);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH
            && name != header::TRANSFER_ENCODING
            && name != header::CONNECTION
        {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.body(body).send().await {
        Ok(answer) => answer,
        Err(_) => return status(StatusCode::BAD_GATEWAY),
    };
    let mut response = Response::builder().status(answer.status());
    // Content-Length stays: a HEAD's tells the object's size.
    for (name, value) in answer.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).expect("response builds")
}

fn status(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .expect("response builds")
}
