-- Issue 15 (findings 4, 9, 10): one normalised form of every email, email
-- verification, and a sign-up throttle shared by every router process.

-- The form every comparison uses (router/src/auth/email.rs `normalize`: trimmed,
-- NFKC, lowercased by Unicode's rules), computed by the router, never by
-- Postgres' `lower()`, whose result depends on the database's locale (`İ`).
-- Null for accounts without an address (Supabase phone sign-ins).
alter table users add column email_normalized text;

-- Pure-ASCII addresses normalise to their ASCII lowercase, which Postgres computes
-- exactly under the "C" collation; the router fills in the rest at start-up
-- (`auth::email::backfill`). Should two existing accounts share a form, the oldest
-- keeps it and the others stay null: they cannot sign in until an administrator
-- resolves the duplicate (the router names them in a warning at start-up).
update users u set email_normalized = k.form
from (
    select id, form, row_number() over (partition by form order by created_at, id) as n
    from (select id, created_at, lower(btrim(email) collate "C") as form
          from users where email ~ '^[ -~]+$' and btrim(email) <> '') s
) k
where u.id = k.id and k.n = 1;

drop index users_email_key;
create unique index users_email_normalized_key on users (email_normalized);

-- Email verification: when the address was proven, and the hash (sha256) of the
-- one outstanding link's token with its expiry. Supabase accounts are verified by
-- Supabase and never get a token here.
alter table users
    add column email_verified_at timestamptz,
    add column email_verification_hash bytea unique,
    add column email_verification_expires_at timestamptz;

-- Accounts paying when this migration runs keep using the model (billing on
-- requires a verified address from now on).
update users set email_verified_at = now() where subscription_active;

-- Sign-ups per client address and per network (/24, /64), in fixed windows; the
-- same counters rate the sending of verification mail per user.
create table signup_throttle (
    key          text primary key,
    count        integer not null default 0,
    window_start timestamptz not null default now()
);
