//! The migrations: they apply to an empty database, applying them again changes
//! nothing, and every table a user owns has its owner column, a foreign key to
//! users, an index and a row-level security policy.

use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn migrations_apply_to_an_empty_database_and_are_idempotent(db: PgPool) {
    let tables = |db: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "select tablename::text from pg_tables where schemaname = current_schema() order by 1",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    assert!(tables(db.clone()).await.is_empty(), "starts empty");
    router::MIGRATOR.run(&db).await.expect("first run");
    let first = tables(db.clone()).await;
    router::MIGRATOR
        .run(&db)
        .await
        .expect("second run is a no-op");
    assert_eq!(tables(db.clone()).await, first);
    for t in [
        "users",
        "workspaces",
        "conversations",
        "messages",
        "documents",
        "files",
        "usage",
        "stripe_events",
    ] {
        assert!(first.iter().any(|x| x == t), "missing table {t}");
    }
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(applied as usize, router::MIGRATOR.iter().count());
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn every_owned_table_has_a_foreign_key_an_index_and_a_policy(db: PgPool) {
    let owned: Vec<(String, bool, bool, bool)> = sqlx::query_as(
        "select c.relname::text,
                exists (select 1 from pg_constraint k where k.conrelid = c.oid and k.contype = 'f'
                        and k.conkey = array[a.attnum] and k.confrelid = 'users'::regclass),
                exists (select 1 from pg_index i where i.indrelid = c.oid and i.indkey[0] = a.attnum),
                c.relrowsecurity and exists (select 1 from pg_policy p where p.polrelid = c.oid)
         from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attname = 'owner_id'
         where c.relkind = 'r' and c.relnamespace = current_schema()::regnamespace
         order by 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let names: Vec<&str> = owned.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "conversations",
            "documents",
            "egress_approvals",
            "egress_connections",
            "egress_requests",
            "files",
            "messages",
            "refresh_tokens",
            "usage",
            "workspaces"
        ]
    );
    for (table, fk, index, policy) in owned {
        assert!(fk, "{table}.owner_id has no foreign key to users");
        assert!(index, "{table}.owner_id has no index");
        assert!(policy, "{table} has no row-level security policy");
    }
}

#[sqlx::test(migrations = false)]
async fn migration_0005_normalises_stored_addresses_and_keeps_paying_accounts_verified(db: PgPool) {
    // The database as the previous release left it: migrations 0001–0004 only.
    let earlier = tempfile::tempdir().unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0005" {
            std::fs::copy(&path, earlier.path().join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(earlier.path())
        .await
        .unwrap()
        .run(&db)
        .await
        .unwrap();
    for (email, paying) in [
        ("Ada@Example.COM", false),
        ("Payer@example.com", true),
        ("Éva@example.com", false),
    ] {
        sqlx::query(
            "insert into users (email, password_hash, subscription_active) values ($1, 'x', $2)",
        )
        .bind(email)
        .bind(paying)
        .execute(&db)
        .await
        .unwrap();
    }
    sqlx::query("insert into users (email, external_auth_id) values ('', 'phone-user')")
        .execute(&db)
        .await
        .unwrap();

    router::MIGRATOR.run(&db).await.expect("0005 applies");
    let rows = |db: PgPool| async move {
        sqlx::query_as::<_, (String, Option<String>, bool)>(
            "select email, email_normalized, email_verified_at is not null from users order by email collate \"C\"",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    assert_eq!(
        rows(db.clone()).await,
        [
            ("".into(), None, false),
            (
                "Ada@Example.COM".into(),
                Some("ada@example.com".into()),
                false
            ),
            (
                "Payer@example.com".into(),
                Some("payer@example.com".into()),
                true
            ),
            ("Éva@example.com".into(), None, false),
        ],
        "ASCII addresses in SQL; the paying account counts as verified"
    );
    // The router gives the rest their form at start.
    assert_eq!(router::auth::email::backfill(&db).await.unwrap(), 1);
    assert_eq!(rows(db).await[3].1.as_deref(), Some("éva@example.com"));
}
