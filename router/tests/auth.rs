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
async fn guessable_passwords_are_refused_with_the_reason_and_what_to_do(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    for (email, password) in [
        ("digits@example.com", "1234567890"),
        ("common@example.com", "password1234"),
        ("keyboard@example.com", "qwertyuiop"),
        ("grace.hopper1906@example.com", "grace.hopper1906"),
    ] {
        let r = app
            .post(
                "/api/auth/register",
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{password}: {}",
            r.body
        );
        assert_eq!(r.code(), "invalid_request");
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("this password is too easy to guess: "),
            "{message}"
        );
        assert!(
            message.contains("unrelated words"),
            "says what to do: {message}"
        );
    }
    let r = app
        .post(
            "/api/auth/register",
            json!({"email": "digits@example.com", "password": "1234567890"}),
        )
        .await;
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("common password"), "says why: {message}");
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(users, 0, "no weak password made an account");
    // A phrase of unrelated words is fine.
    app.register("strong@example.com").await;
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

const ATTACKER: &str = "198.51.100.7";
const OWNER: &str = "203.0.113.9";

/// `n` sign-ins of `email` with a wrong password from `ip`; their statuses.
async fn fail_logins(app: &TestApp, ip: &str, email: &str, n: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        let r = app
            .post_from(
                ip,
                "/api/auth/login",
                json!({"email": email, "password": "wrong password!"}),
            )
            .await;
        statuses.push(r.status);
    }
    statuses
}

/// Lets every wait of the login throttle run out (moved in the database rather
/// than waited for).
async fn let_waits_expire(db: &PgPool) {
    sqlx::query("update login_throttle set locked_until = now() - interval '1 second'")
        .execute(db)
        .await
        .unwrap();
}

fn retry_after(r: &common::Reply) -> u64 {
    r.headers["retry-after"].to_str().unwrap().parse().unwrap()
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn failures_make_that_network_wait_longer_each_time_not_a_fixed_lock(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    app.register("careless@example.com").await;
    let statuses = fail_logins(&app, OWNER, "careless@example.com", 5).await;
    assert_eq!(statuses, vec![StatusCode::UNAUTHORIZED; 5]);
    // Past five failures the next attempt waits, even with the right password...
    let right = json!({"email": "careless@example.com", "password": PASSWORD});
    let waiting = app.post_from(OWNER, "/api/auth/login", right.clone()).await;
    assert_eq!(waiting.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&waiting), 1, "the first wait is a second");
    assert!(
        waiting.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again in 1 seconds"),
        "{}",
        waiting.body
    );
    // ...and each further failure doubles the wait: 2 s, 4 s, 8 s.
    for expected in [2, 4, 8] {
        let_waits_expire(&db).await;
        fail_logins(&app, OWNER, "careless@example.com", 1).await;
        let r = app.post_from(OWNER, "/api/auth/login", right.clone()).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after(&r), expected);
    }
    // Never more than fifteen minutes, however many failures.
    sqlx::query("update login_throttle set failures = 1000")
        .execute(&db)
        .await
        .unwrap();
    let_waits_expire(&db).await;
    fail_logins(&app, OWNER, "careless@example.com", 1).await;
    let r = app.post_from(OWNER, "/api/auth/login", right.clone()).await;
    assert!(
        (14 * 60..=15 * 60).contains(&retry_after(&r)),
        "{}",
        retry_after(&r)
    );
    // Once the wait is over, the right password signs in and the count is forgotten.
    let_waits_expire(&db).await;
    let open = app.post_from(OWNER, "/api/auth/login", right).await;
    assert_eq!(open.status, StatusCode::OK, "{}", open.body);
    let left: i64 =
        sqlx::query_scalar("select count(*) from login_throttle where key like 'account:%'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_attackers_failures_from_another_network_do_not_keep_the_owner_out(db: PgPool) {
    let app = TestApp::new(db).await;
    app.register("victim@example.com").await;
    // Thirty wrong passwords from the attacker's address: the attacker waits...
    let statuses = fail_logins(&app, ATTACKER, "victim@example.com", 30).await;
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let again = app
        .post_from(
            ATTACKER,
            "/api/auth/login",
            json!({"email": "victim@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    // ...while the owner, from their own network, signs in at once.
    let owner = app
        .post_from(
            OWNER,
            "/api/auth/login",
            json!({"email": "victim@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_variant_spelling_does_not_sign_into_an_account_whose_sign_ins_wait(db: PgPool) {
    let app = TestApp::new(db).await;
    app.register("imran@example.com").await;
    fail_logins(&app, ATTACKER, "imran@example.com", 10).await;
    let right = |email: &str| json!({"email": email, "password": PASSWORD});
    let locked = app
        .post_from(ATTACKER, "/api/auth/login", right("imran@example.com"))
        .await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    // `İ` lowercases to `i` in Postgres but to `i̇` in Rust: the variant used to
    // find the account while missing its lock. Now it is its own (unknown)
    // address, from anywhere.
    for (ip, variant) in [
        (ATTACKER, "İmran@example.com"),
        (OWNER, "İmran@example.com"),
        (OWNER, "İMRAN@EXAMPLE.COM"),
    ] {
        let r = app.post_from(ip, "/api/auth/login", right(variant)).await;
        assert_ne!(r.status, StatusCode::OK, "{variant} from {ip}: {}", r.body);
    }
    // Case and compatibility spellings are the same address, and wait with it.
    for variant in ["IMRAN@example.com", "ｉｍｒａｎ@example.com"] {
        let r = app
            .post_from(ATTACKER, "/api/auth/login", right(variant))
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{variant}");
    }
    let r = app
        .post_from(OWNER, "/api/auth/login", right("ｉｍｒａｎ@EXAMPLE.com"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn one_form_of_an_address_is_one_account(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    app.register("ｆｉｎｎ@example.com").await;
    for taken in ["FINN@example.com", "ﬁnn@example.com", " finn@EXAMPLE.com"] {
        let r = app
            .post(
                "/api/auth/register",
                json!({"email": taken, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{taken}: {}", r.body);
    }
    let form: String = sqlx::query_scalar("select email_normalized from users")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(form, "finn@example.com");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn stored_addresses_get_their_form_and_duplicates_are_left_to_an_administrator(db: PgPool) {
    // Rows as an older router wrote them: no normalised form.
    for (email, age) in [
        ("Éva@Example.com", "3 days"),
        ("E\u{301}VA@example.com", "1 day"),
        ("Zoë@example.com", "2 days"),
    ] {
        sqlx::query(
            "insert into users (email, password_hash, created_at) values ($1, 'x', now() - $2::interval)",
        )
        .bind(email)
        .bind(age)
        .execute(&db)
        .await
        .unwrap();
    }
    let filled = router::auth::email::backfill(&db).await.unwrap();
    assert_eq!(filled, 2);
    let forms: Vec<(String, Option<String>)> =
        sqlx::query_as("select email, email_normalized from users order by created_at")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        forms[0].1.as_deref(),
        Some("éva@example.com"),
        "the oldest keeps it"
    );
    assert_eq!(forms[1].1.as_deref(), Some("zoë@example.com"));
    assert_eq!(
        forms[2].1, None,
        "the younger duplicate is left without a form"
    );
    assert_eq!(router::auth::email::backfill(&db).await.unwrap(), 0);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn unknown_emails_cost_an_argon2_verification_like_known_ones(db: PgPool) {
    let app = TestApp::new(db).await;
    app.register("known@example.com").await;
    let verifications = || app.state.metrics.password_verifications.get();
    let before = verifications();
    let wrong = app
        .post(
            "/api/auth/login",
            json!({"email": "known@example.com", "password": "not the password"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(verifications(), before + 1, "a known account is verified");
    let unknown = app
        .post(
            "/api/auth/login",
            json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        verifications(),
        before + 2,
        "an unknown email runs the same argon2 verification"
    );
    assert_eq!(wrong.body, unknown.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn failures_spread_over_accounts_slow_that_address_only(db: PgPool) {
    let app = TestApp::new(db).await;
    let me = app.register("innocent@example.com").await;
    for i in 0..20 {
        let r = app
            .post_from(
                ATTACKER,
                "/api/auth/login",
                json!({"email": format!("guess{i}@example.com"), "password": "wrong password!"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let right = json!({"email": me.email, "password": PASSWORD});
    // The guessing address now waits, whichever account it names...
    let r = app
        .post_from(ATTACKER, "/api/auth/login", right.clone())
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // ...another network does not...
    let r = app.post_from(OWNER, "/api/auth/login", right).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // ...and a valid token still works: the throttle is on signing in only.
    assert_eq!(app.get("/api/me", &me.access).await.status, StatusCode::OK);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn fewer_than_five_failures_do_not_slow_the_owner(db: PgPool) {
    let app = TestApp::new(db).await;
    app.register("careless@example.com").await;
    fail_logins(&app, OWNER, "careless@example.com", 4).await;
    let r = app
        .post_from(
            OWNER,
            "/api/auth/login",
            json!({"email": "careless@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Signs up `email` from `ip`.
async fn sign_up_from(app: &TestApp, ip: &str, email: &str) -> common::Reply {
    app.post_from(
        ip,
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD}),
    )
    .await
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn mass_sign_ups_from_one_address_or_network_are_refused_while_others_sign_up(db: PgPool) {
    let app = TestApp::with_config(db.clone(), |c| {
        c.signups_per_address_per_hour = 3;
        c.signups_per_network_per_hour = 5;
    })
    .await;
    // One address: three accounts, then 429 naming it.
    for i in 0..3 {
        let r = sign_up_from(&app, "198.51.100.7", &format!("a{i}@example.com")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let refused = sign_up_from(&app, "198.51.100.7", "a3@example.com").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "too_many_requests");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "too many accounts were created from your address (198.51.100.7) in the last hour (at most 3)"
        ),
        "{message}"
    );
    assert!(retry_after(&refused) > 3500, "{}", retry_after(&refused));
    // The rest of its /24: two more, then the network is refused.
    for ip in ["198.51.100.8", "198.51.100.9"] {
        let r = sign_up_from(&app, ip, &format!("{ip}@example.com")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let refused = sign_up_from(&app, "198.51.100.200", "b@example.com").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("your network (198.51.100.0/24)"),
        "{}",
        refused.body
    );
    // An IPv6 /64: each address new, the network still counted.
    for i in 1..=5 {
        let r = sign_up_from(
            &app,
            &format!("2001:db8:1:2::{i}"),
            &format!("v6-{i}@example.com"),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let refused = sign_up_from(&app, "2001:db8:1:2:ffff::1", "v6-6@example.com").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("your network (2001:db8:1:2::/64)"),
        "{}",
        refused.body
    );
    // Other networks still sign up.
    for (ip, email) in [
        ("203.0.113.9", "elsewhere@example.com"),
        ("2001:db8:1:3::1", "next-64@example.com"),
    ] {
        let r = sign_up_from(&app, ip, email).await;
        assert_eq!(r.status, StatusCode::CREATED, "{ip}: {}", r.body);
    }
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(users, 3 + 2 + 5 + 2, "refused sign-ups create nothing");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_taken_address_does_not_use_up_the_sign_up_allowance(db: PgPool) {
    let app = TestApp::with_config(db, |c| c.signups_per_address_per_hour = 2).await;
    assert_eq!(
        sign_up_from(&app, OWNER, "one@example.com").await.status,
        StatusCode::CREATED
    );
    for _ in 0..3 {
        let r = sign_up_from(&app, OWNER, "ONE@example.com").await;
        assert_eq!(r.status, StatusCode::CONFLICT);
    }
    assert_eq!(
        sign_up_from(&app, OWNER, "two@example.com").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        sign_up_from(&app, OWNER, "three@example.com").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn sign_up_mails_a_link_over_smtp_that_verifies_the_address(db: PgPool) {
    let smtp = common::smtp::FakeSmtp::start().await;
    let smtp_url = smtp.url();
    let app = TestApp::with_config(db, |c| {
        c.smtp_url = Some(smtp_url);
        c.mail_from = Some("Jarvis <noreply@jarvis.example.com>".into());
        c.public_url = Some("https://jarvis.example.com".into());
    })
    .await;
    let user = app.register("Reader@Example.com").await;
    assert_eq!(
        app.get("/api/me", &user.access).await.body["email_verified"],
        false
    );

    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.from, "noreply@jarvis.example.com");
    assert_eq!(mail.to, vec!["Reader@Example.com".to_string()]);
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Confirm your email address for Jarvis")
    );
    let body = mail.body();
    let link = body
        .split_whitespace()
        .find(|w| w.starts_with("https://jarvis.example.com/api/auth/verify?token="))
        .unwrap_or_else(|| panic!("no link in {body}"));
    let path = link.trim_start_matches("https://jarvis.example.com");

    let opened = app.send(Method::GET, path, None, None).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.body);
    assert!(String::from_utf8_lossy(&opened.bytes).contains("verified"));
    assert_eq!(
        app.get("/api/me", &user.access).await.body["email_verified"],
        true
    );

    // The link works once; a made-up one never.
    for path in [path, "/api/auth/verify?token=made-up", "/api/auth/verify"] {
        let r = app.send(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
    // Nothing to resend once verified.
    let resend = app
        .send(
            Method::POST,
            "/api/auth/verify/resend",
            Some(&user.access),
            None,
        )
        .await;
    assert_eq!(resend.status, StatusCode::CONFLICT, "{}", resend.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_resent_link_replaces_the_last_and_resending_is_rated(db: PgPool) {
    let smtp = common::smtp::FakeSmtp::start().await;
    let smtp_url = smtp.url();
    let app = TestApp::with_config(db, |c| c.smtp_url = Some(smtp_url)).await;
    let user = app.register("again@example.com").await;
    smtp.wait_for(1).await;
    let resend = || {
        app.send(
            Method::POST,
            "/api/auth/verify/resend",
            Some(&user.access),
            None,
        )
    };
    for _ in 0..4 {
        let r = resend().await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(r.body["sent_to"], "again@example.com");
    }
    let mails = smtp.wait_for(5).await;
    let r = resend().await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let token = |m: &common::smtp::Mail| {
        let body = m.body();
        body.split("token=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    // Only the newest link verifies.
    let old = app
        .send(
            Method::GET,
            &format!("/api/auth/verify?token={}", token(&mails[0])),
            None,
            None,
        )
        .await;
    assert_eq!(old.status, StatusCode::BAD_REQUEST);
    let new = app
        .send(
            Method::GET,
            &format!("/api/auth/verify?token={}", token(&mails[4])),
            None,
            None,
        )
        .await;
    assert_eq!(new.status, StatusCode::OK);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn without_smtp_sign_up_works_and_resending_says_what_is_missing(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("plain@example.com").await;
    let r = app
        .send(
            Method::POST,
            "/api/auth/verify/resend",
            Some(&user.access),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "mail_off");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JARVIS_SMTP_URL"),
        "{}",
        r.body
    );
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

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn expired_throttle_rows_are_pruned_and_live_ones_kept(db: PgPool) {
    sqlx::query(
        "insert into login_throttle (key, failures, window_start, locked_until) values
             ('ip:old', 3, now() - interval '1 hour', null),
             ('ip:waiting', 30, now() - interval '1 hour', now() + interval '5 minutes'),
             ('ip:recent', 3, now(), null)",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "insert into signup_throttle (key, count, window_start) values
             ('signup:net:old', 5, now() - interval '2 days'), ('signup:net:now', 5, now())",
    )
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(router::auth::throttle::prune(&db).await.unwrap(), 1);
    assert_eq!(router::auth::signups::prune(&db).await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar(
        "select key from login_throttle union all select key from signup_throttle order by 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(left, ["ip:recent", "ip:waiting", "signup:net:now"]);
}
