//! Supabase Auth tokens, minted by the real Supabase CLI (npm `supabase`, which
//! makes signing keys and tokens exactly as Supabase Auth does), verified against
//! a JWKS endpoint served at the network boundary like a Supabase project's.

mod common;

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Json, Router, http::StatusCode, response::IntoResponse, routing::get};
use common::TestApp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

fn supabase_cli() -> PathBuf {
    let path = std::env::var_os("JARVIS_SUPABASE_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../.tools/supabase/node_modules/.bin/supabase")
        });
    assert!(
        path.exists(),
        "the Supabase CLI is missing at {}: run ./scripts/setup.sh",
        path.display()
    );
    path
}

async fn cli(args: &[&str], stdin: &str) -> String {
    let mut child = tokio::process::Command::new(supabase_cli())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("supabase CLI starts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    input.write_all(b"\n").await.unwrap();
    drop(input);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("supabase CLI finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "supabase {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A private signing key in Supabase's JWK format.
async fn signing_key(alg: &str) -> Value {
    let out = cli(&["gen", "signing-key", "--algorithm", alg], "").await;
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JWK line");
    serde_json::from_str(line).unwrap()
}

fn public_part(private: &Value) -> Value {
    let mut public = private.clone();
    for k in ["d", "p", "q", "dp", "dq", "qi"] {
        public.as_object_mut().unwrap().remove(k);
    }
    public
}

/// A token for `sub` signed by `key` with Supabase's own tool.
async fn mint(key: &Value, role: &str, sub: Uuid, extra: Value, exp: Option<&str>) -> String {
    let payload = extra.to_string();
    let sub = sub.to_string();
    let mut args = vec![
        "gen",
        "bearer-jwt",
        "--role",
        role,
        "--sub",
        &sub,
        "--payload",
        &payload,
    ];
    if let Some(exp) = exp {
        args.extend(["--exp", exp]);
    }
    let out = cli(&args, &key.to_string()).await;
    out.split_whitespace()
        .rev()
        .find(|w| w.starts_with("ey") && w.matches('.').count() == 2)
        .expect("a token in the output")
        .to_string()
}

/// A stand-in for a Supabase project's JWKS endpoint, counting fetches.
async fn jwks_server(keys: Vec<Value>) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let app = Router::new().route(
        "/auth/v1/.well-known/jwks.json",
        get(move || {
            let keys = keys.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                (
                    [("cache-control", "public, max-age=600")],
                    Json(json!({"keys": keys})),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fetches)
}

fn login_claims(url: &str, email: &str) -> Value {
    json!({"aud": "authenticated", "iss": format!("{url}/auth/v1"), "email": email, "is_anonymous": false})
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn tokens_signed_with_project_signing_keys_sign_the_user_in(db: PgPool) {
    let es = signing_key("ES256").await;
    let rs = signing_key("RS256").await;
    let (url, fetches) = jwks_server(vec![public_part(&es), public_part(&rs)]).await;
    let app = TestApp::with_config(db.clone(), |c| c.supabase_url = Some(url.clone())).await;

    for (key, email) in [(&es, "es@example.com"), (&rs, "rs@example.com")] {
        let sub = Uuid::new_v4();
        let token = mint(key, "authenticated", sub, login_claims(&url, email), None).await;
        let me = app.get("/api/me", &token).await;
        assert_eq!(me.status, StatusCode::OK, "{}: {}", key["alg"], me.body);
        assert_eq!(me.body["id"], sub.to_string());
        assert_eq!(me.body["email"], email);
        let external: Option<String> =
            sqlx::query_scalar("select external_auth_id from users where id = $1")
                .bind(sub)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(external, Some(sub.to_string()));
        // Their documents work like anyone's.
        assert_eq!(
            app.get("/api/documents", &token).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the key set is fetched once and cached"
    );

    // Built-in sign-up is off when Supabase signs people in.
    let r = app
        .post(
            "/api/auth/register",
            json!({"email": "x@example.com", "password": common::PASSWORD}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "builtin_accounts_off")
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn bad_supabase_tokens_are_refused(db: PgPool) {
    let es = signing_key("ES256").await;
    let rs = signing_key("RS256").await;
    let stranger = signing_key("ES256").await;
    let (url, fetches) = jwks_server(vec![public_part(&es), public_part(&rs)]).await;
    let app = TestApp::with_config(db.clone(), |c| c.supabase_url = Some(url.clone())).await;
    let sub = Uuid::new_v4();
    let claims = login_claims(&url, "victim@example.com");

    let good = mint(&es, "authenticated", sub, claims.clone(), None).await;
    assert_eq!(
        app.get("/api/me", &good).await.status,
        StatusCode::OK,
        "control"
    );

    let expired = mint(
        &es,
        "authenticated",
        sub,
        claims.clone(),
        Some("2020-01-01T00:00:00Z"),
    )
    .await;
    let r = app.get("/api/me", &expired).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "token_expired")
    );

    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("some-other-app");
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = json!("http://evil.example/auth/v1");
    let mut anonymous = claims.clone();
    anonymous["is_anonymous"] = json!(true);
    // HS/RS confusion: HS256 "signed" with the project's public RSA key.
    let rsa_public = public_part(&rs).to_string();
    let mut confused_header = Header::new(Algorithm::HS256);
    confused_header.kid = rs["kid"].as_str().map(str::to_string);
    let mut confused_claims = claims.clone();
    confused_claims["sub"] = json!(sub.to_string());
    confused_claims["role"] = json!("authenticated");
    confused_claims["exp"] = json!(jsonwebtoken::get_current_timestamp() + 600);
    let confused = jsonwebtoken::encode(
        &confused_header,
        &confused_claims,
        &EncodingKey::from_secret(rsa_public.as_bytes()),
    )
    .unwrap();
    // ES key presented as RS: the header names the EC key but claims RS256.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let header: Value = common::jwt_payload(&format!("x.{}.y", parts[0]));
    let mut rs_header = header.clone();
    rs_header["alg"] = json!("RS256");
    let alg_swapped = format!("{}.{}.{}", b64(&rs_header.to_string()), parts[1], parts[2]);
    let mut none_header = header;
    none_header["alg"] = json!("none");
    let none = format!("{}.{}.", b64(&none_header.to_string()), parts[1]);
    let mut other_user = common::jwt_payload(&good);
    other_user["sub"] = json!(Uuid::new_v4().to_string());
    parts[1] = b64(&other_user.to_string());
    let tampered = parts.join(".");

    let cases = [
        (
            "wrong audience",
            mint(&es, "authenticated", sub, wrong_aud, None).await,
        ),
        (
            "wrong issuer",
            mint(&es, "authenticated", sub, wrong_iss, None).await,
        ),
        (
            "anon role",
            mint(&es, "anon", sub, claims.clone(), None).await,
        ),
        (
            "service role",
            mint(&es, "service_role", sub, claims.clone(), None).await,
        ),
        (
            "anonymous sign-in",
            mint(&es, "authenticated", sub, anonymous, None).await,
        ),
        (
            "key not in the project",
            mint(&stranger, "authenticated", sub, claims.clone(), None).await,
        ),
        ("HS256 with the RSA public key", confused),
        ("alg swapped to RS256", alg_swapped),
        ("alg none", none),
        ("tampered payload", tampered),
    ];
    for (name, token) in cases {
        let r = app.get("/api/me", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.body);
    }
    // Unknown key ids caused at most one re-fetch, not one per request.
    assert!(
        fetches.load(Ordering::SeqCst) <= 2,
        "{} fetches",
        fetches.load(Ordering::SeqCst)
    );
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(users, 1, "refused tokens create no users");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn legacy_secret_projects_verify_hs256_and_nothing_else(db: PgPool) {
    let secret = "super-secret-jwt-token-with-at-least-32-characters-long";
    let url = "http://127.0.0.1:9"; // nothing listens: JWKS is never needed here
    let app = TestApp::with_config(db, |c| {
        c.supabase_jwt_secret = Some(secret.into());
        c.supabase_url = Some(url.into());
    })
    .await;
    let sub = Uuid::new_v4();
    let mut claims = login_claims(url, "legacy@example.com");
    claims["sub"] = json!(sub.to_string());
    claims["role"] = json!("authenticated");
    claims["exp"] = json!(jsonwebtoken::get_current_timestamp() + 3600);
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let me = app.get("/api/me", &token).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["id"], sub.to_string());

    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"another secret entirely, 32+ chars"),
    )
    .unwrap();
    assert_eq!(
        app.get("/api/me", &wrong).await.status,
        StatusCode::UNAUTHORIZED
    );
    // An RS256 token cannot be checked without a reachable key set: refused (503 or 401), never accepted.
    let rs = signing_key("RS256").await;
    let rs_token = mint(
        &rs,
        "authenticated",
        sub,
        login_claims(url, "legacy@example.com"),
        None,
    )
    .await;
    let r = app.get("/api/me", &rs_token).await;
    assert!(
        matches!(
            r.status,
            StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE
        ),
        "{}",
        r.status
    );
}

fn b64(s: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(s)
}
