//! Email addresses: the one normalised form every comparison uses (sign-up, sign-in,
//! the login throttle's keys, admin look-ups and the unique index on
//! `users.email_normalized`), and the start-up backfill of that column.
//!
//! The form is computed here and only here, never by Postgres' `lower()`: the
//! database's locale decides what that does to non-ASCII letters (`İ` became `i`
//! in the look-up but stayed `i̇` in the throttle key, so a locked account could be
//! signed into with a variant spelling).

use sqlx::PgPool;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// The form an address is compared in: surrounding white space trimmed, NFKC
/// (compatibility characters such as `ﬁ` or full-width letters folded), then
/// lowercased by Unicode's rules and recomposed (NFC), so that look-alike
/// spellings of one address share one form.
pub fn normalize(email: &str) -> String {
    let folded: String = email.trim().nfkc().collect();
    folded.to_lowercase().nfc().collect()
}

/// Fills `users.email_normalized` for addresses the migration could not
/// normalise in SQL (non-ASCII ones, and rows written by an older router). Two
/// accounts whose addresses share a form keep the older one's; the other is left
/// without a form (it cannot sign in) and named in a warning for an administrator.
/// Returns how many rows were filled.
pub async fn backfill(db: &PgPool) -> sqlx::Result<u64> {
    // language=PostgreSQL
    let rows: Vec<(Uuid, String)> = crate::db::query_as(
        "select id, email from users where email_normalized is null and btrim(email) <> ''
         order by created_at, id",
    )
    .fetch_all(db)
    .await?;
    let mut filled = 0;
    for (id, email) in rows {
        // language=PostgreSQL
        let done = crate::db::query(
            "update users set email_normalized = $2 where id = $1 and email_normalized is null
             and not exists (select 1 from users where email_normalized = $2)",
        )
        .bind(id)
        .bind(normalize(&email))
        .execute(db)
        .await;
        match done {
            Ok(r) if r.rows_affected() == 1 => filled += 1,
            Ok(_) => tracing::warn!(
                user.id = %id,
                "this account's email address normalises to another account's; it cannot sign in until an administrator resolves the duplicate"
            ),
            Err(e) if is_unique_violation(&e) => tracing::warn!(
                user.id = %id,
                "this account's email address normalises to another account's; it cannot sign in until an administrator resolves the duplicate"
            ),
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn case_and_surrounding_space_do_not_matter() {
        assert_eq!(normalize("  Ada@Example.COM "), "ada@example.com");
        assert_eq!(normalize("ada@example.com"), "ada@example.com");
    }

    #[test]
    fn compatibility_and_composed_forms_fold_together() {
        // Full-width letters, the `ﬁ` ligature, a decomposed `é`.
        assert_eq!(normalize("ＡＤＡ@example.com"), "ada@example.com");
        assert_eq!(normalize("ﬁnn@example.com"), "finn@example.com");
        assert_eq!(
            normalize("Re\u{301}mi@example.com"),
            normalize("Rémi@example.com")
        );
    }

    #[test]
    fn dotted_capital_i_has_one_form_whatever_the_locale() {
        // Rust's lowercase of `İ` is `i` + combining dot: a form of its own, the
        // same in the throttle key and the look-up (Postgres never computes it).
        assert_eq!(normalize("İmran@example.com"), "i\u{307}mran@example.com");
        assert_ne!(
            normalize("İmran@example.com"),
            normalize("imran@example.com")
        );
        assert_eq!(
            normalize("İMRAN@example.com"),
            normalize("i\u{307}mran@example.com")
        );
    }
}
