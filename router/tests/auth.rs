//! Built-in accounts: sign-up, sign-in, refresh rotation, sign-out, validation,
//! the login throttle and the access tokens' checks.

mod common;

use axum::http::{Method, StatusCode};
use common::{PASSWORD, TestApp, user_from};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn register_login_and_me_name_the_same_user(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("Ada@Example.com").await;
    let me = app.get("/api/me", &user.access).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], user.id.to_string());
    assert_eq!(me.body["email"], "Ada@Example.com");
    assert_eq!(me.body["tier"], "free");
    assert_eq!(
        me.body["subscription_active"], true,
        "billing is off, so every account is active"
    );

    // Sign-in is case-insensitive on the email.
    let login = app
        .post(
            "/api/auth/login",
            json!({"email": "ada@example.COM", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert_eq!(user_from(&login.body).id, user.id);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn passwords_are_stored_as_argon2id_hashes(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let user = app.register("hash@example.com").await;
    let stored: String = sqlx::query_scalar("select password_hash from users where id = $1")
        .bind(user.id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains(PASSWORD));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn access_tokens_live_fifteen_minutes(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("ttl@example.com").await;
    let claims = common::jwt_payload(&user.access);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 15 * 60);
    assert_eq!(claims["aud"], "authenticated");
    assert_eq!(claims["sub"], user.id.to_string());
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn bad_sign_ups_are_refused_and_create_nothing(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    app.register("taken@example.com").await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "a@b", "password": PASSWORD}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "short@example.com", "password": "123456789"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "TAKEN@example.com", "password": PASSWORD}),
            StatusCode::CONFLICT,
        ),
        (
            json!({"email": "missing@example.com"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (body, status) in cases {
        let r = app.post("/api/auth/register", body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(
            !r.body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{}",
            r.body
        );
    }
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(users, 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn bodies_over_one_mebibyte_are_refused_with_413(db: PgPool) {
    let app = TestApp::new(db).await;
    let big = "x".repeat(1024 * 1024 + 1);
    let r = app
        .post(
            "/api/auth/register",
            json!({"email": "big@example.com", "password": big}),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "payload_too_large");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn wrong_passwords_and_unknown_accounts_get_the_same_answer(db: PgPool) {
    let app = TestApp::new(db).await;
    app.register("known@example.com").await;
    let wrong = app
        .post(
            "/api/auth/login",
            json!({"email": "known@example.com", "password": "not the password"}),
        )
        .await;
    let unknown = app
        .post(
            "/api/auth/login",
            json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, unknown.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn refresh_rotates_and_a_reused_token_ends_the_session(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("rotate@example.com").await;

    let first = app
        .post("/api/auth/refresh", json!({"refresh_token": user.refresh}))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let rotated = user_from(&first.body);
    assert_ne!(rotated.refresh, user.refresh);
    assert_eq!(
        app.get("/api/me", &rotated.access).await.status,
        StatusCode::OK
    );

    // The spent token again: refused, and its whole family (the newer token too) revoked.
    let replay = app
        .post("/api/auth/refresh", json!({"refresh_token": user.refresh}))
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replay.code(), "invalid_refresh_token");
    let after = app
        .post(
            "/api/auth/refresh",
            json!({"refresh_token": rotated.refresh}),
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);

    // Another login is a separate family and still works.
    let login = app
        .post(
            "/api/auth/login",
            json!({"email": "rotate@example.com", "password": PASSWORD}),
        )
        .await;
    let again = user_from(&login.body);
    let ok = app
        .post("/api/auth/refresh", json!({"refresh_token": again.refresh}))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn logout_revokes_the_refresh_token(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("bye@example.com").await;
    let out = app
        .post("/api/auth/logout", json!({"refresh_token": user.refresh}))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let r = app
        .post("/api/auth/refresh", json!({"refresh_token": user.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let garbage = app
        .post("/api/auth/refresh", json!({"refresh_token": "garbage"}))
        .await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn ten_failures_lock_the_account_for_fifteen_minutes(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    app.register("victim@example.com").await;
    let wrong = json!({"email": "victim@example.com", "password": "wrong password!"});
    for i in 0..10 {
        let r = app.post("/api/auth/login", wrong.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Locked: even the right password is refused, with a time to retry.
    let right = json!({"email": "victim@example.com", "password": PASSWORD});
    let locked = app.post("/api/auth/login", right.clone()).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = locked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((14 * 60..=15 * 60).contains(&retry), "retry after {retry}s");

    // Fifteen minutes later (moved back in the database rather than waited for).
    sqlx::query(
        "update login_throttle set locked_until = now() - interval '1 second',
             window_start = window_start - interval '15 minutes'",
    )
    .execute(&db)
    .await
    .unwrap();
    let open = app.post("/api/auth/login", right).await;
    assert_eq!(open.status, StatusCode::OK, "{}", open.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn failures_spread_over_accounts_lock_the_address(db: PgPool) {
    let app = TestApp::new(db).await;
    let me = app.register("innocent@example.com").await;
    for i in 0..10 {
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": format!("guess{i}@example.com"), "password": "wrong password!"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Same client address (tests have none: all count as one) is now locked...
    let r = app
        .post(
            "/api/auth/login",
            json!({"email": me.email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // ...while a valid token still works: the lock is on signing in only.
    assert_eq!(app.get("/api/me", &me.access).await.status, StatusCode::OK);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn fewer_than_ten_failures_in_the_window_do_not_lock(db: PgPool) {
    let app = TestApp::new(db).await;
    app.register("careless@example.com").await;
    for _ in 0..9 {
        app.post(
            "/api/auth/login",
            json!({"email": "careless@example.com", "password": "wrong password!"}),
        )
        .await;
    }
    let r = app
        .post(
            "/api/auth/login",
            json!({"email": "careless@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

fn claims(sub: &str, exp_offset: i64, aud: &str, iss: &str) -> serde_json::Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({"sub": sub, "email": "x@example.com", "aud": aud, "iss": iss, "role": "authenticated",
           "iat": now, "exp": now + exp_offset})
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn forged_expired_and_foreign_tokens_are_refused(db: PgPool) {
    let secret = "a known test secret of reasonable length";
    let app = TestApp::with_config(db, |c| c.jwt_secret = Some(secret.into())).await;
    let user = app.register("target@example.com").await;
    let sub = user.id.to_string();
    let key = EncodingKey::from_secret(secret.as_bytes());
    let sign = |c: serde_json::Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &key).unwrap()
    };

    // The control: a token we mint exactly like the router does is accepted.
    let good = sign(claims(&sub, 600, "authenticated", "jarvis"));
    assert_eq!(app.get("/api/me", &good).await.status, StatusCode::OK);

    let expired = sign(claims(&sub, -3600, "authenticated", "jarvis"));
    let r = app.get("/api/me", &expired).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "token_expired")
    );

    let wrong_audience = sign(claims(&sub, 600, "service_role", "jarvis"));
    let wrong_issuer = sign(claims(&sub, 600, "authenticated", "someone-else"));
    let wrong_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&sub, 600, "authenticated", "jarvis"),
        &EncodingKey::from_secret(b"not the secret at all, but long"),
    )
    .unwrap();
    // Tampered: the payload of another user with the good signature.
    let other = claims(
        &uuid::Uuid::new_v4().to_string(),
        600,
        "authenticated",
        "jarvis",
    );
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = base64_url(&other.to_string());
    let tampered = parts.join(".");
    // alg "none", unsigned.
    let none = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&claims(&sub, 600, "authenticated", "jarvis").to_string())
    );
    // Another algorithm of the same family with the same secret.
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims(&sub, 600, "authenticated", "jarvis"),
        &key,
    )
    .unwrap();
    for (name, token) in [
        ("wrong audience", wrong_audience),
        ("wrong issuer", wrong_issuer),
        ("wrong secret", wrong_secret),
        ("tampered", tampered),
        ("alg none", none),
        ("HS512", hs512),
        ("garbage", "abc.def.ghi".to_string()),
    ] {
        let r = app.get("/api/me", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.body);
        assert_eq!(r.code(), "invalid_token", "{name}");
    }
    let r = app.send(Method::GET, "/api/me", None, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
}

fn base64_url(s: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(s)
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn workspace_tokens_name_their_user_until_replaced_or_revoked(db: PgPool) {
    use router::workspaces::tokens;
    let app = TestApp::new(db.clone()).await;
    let alice = app.register("ws-a@example.com").await;
    let bob = app.register("ws-b@example.com").await;
    let a1 = tokens::issue(&db, alice.id).await.unwrap();
    let b1 = tokens::issue(&db, bob.id).await.unwrap();
    assert_eq!(tokens::verify(&db, &a1).await.unwrap(), Some(alice.id));
    assert_eq!(tokens::verify(&db, &b1).await.unwrap(), Some(bob.id));
    // A new wake replaces the token; the old one is dead.
    let a2 = tokens::issue(&db, alice.id).await.unwrap();
    assert_eq!(tokens::verify(&db, &a1).await.unwrap(), None);
    assert_eq!(tokens::verify(&db, &a2).await.unwrap(), Some(alice.id));
    tokens::revoke(&db, alice.id).await.unwrap();
    assert_eq!(tokens::verify(&db, &a2).await.unwrap(), None);
    assert_eq!(tokens::verify(&db, "jw_forged").await.unwrap(), None);
    // A workspace token is not an access token for the browser API.
    assert_eq!(
        app.get("/api/me", &b1).await.status,
        StatusCode::UNAUTHORIZED
    );
}
