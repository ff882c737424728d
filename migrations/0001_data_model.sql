-- The whole data model of Jarvis. Every table a user owns carries `owner_id`
-- (a foreign key to users, indexed) so each query can filter by it, and row-level
-- security restricts those rows to the user set for the transaction as a second
-- line of defence (see 0002_row_level_security.sql).

-- Keeps `updated_at` true without every query having to remember it.
create or replace function set_updated_at() returns trigger
language plpgsql as
$$
begin
    new.updated_at = now();
    return new;
end;
$$;

create table users (
    id                     uuid primary key default gen_random_uuid(),
    email                  text not null,
    -- argon2id PHC string for built-in accounts; null for external (Supabase) accounts.
    password_hash          text,
    -- `sub` of the external identity provider's tokens (Supabase Auth); null for built-in accounts.
    external_auth_id       text unique,
    tier                   text not null default 'free' check (tier in ('free', 'pro', 'enterprise')),
    subscription_active    boolean not null default false,
    subscription_status    text,
    stripe_customer_id     text unique,
    stripe_subscription_id text unique,
    current_period_end     timestamptz,
    disabled_at            timestamptz,
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now(),
    check (password_hash is not null or external_auth_id is not null)
);
-- Emails are compared case-insensitively; one account per address (phone-only
-- Supabase accounts have none).
create unique index users_email_key on users (lower(email)) where email <> '';
create trigger users_updated_at before update on users for each row execute function set_updated_at();

-- Refresh tokens are stored hashed. A family is one login; rotation keeps the family,
-- and presenting an already used token revokes the whole family (token theft).
create table refresh_tokens (
    id          uuid primary key default gen_random_uuid(),
    owner_id    uuid not null references users (id) on delete cascade,
    family_id   uuid not null,
    token_hash  bytea not null unique,
    expires_at  timestamptz not null,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz not null default now()
);
create index refresh_tokens_owner_id_idx on refresh_tokens (owner_id);
create index refresh_tokens_family_id_idx on refresh_tokens (family_id);

-- One workspace per user: the sandbox that runs their agent.
create table workspaces (
    id               uuid primary key default gen_random_uuid(),
    owner_id         uuid not null unique references users (id) on delete cascade,
    state            text not null default 'sleeping' check (state in ('sleeping', 'waking', 'ready', 'failed')),
    -- sha256 of the workspace token the sandbox presents to the gateway; null when revoked.
    token_hash       bytea unique,
    last_activity_at timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);
create trigger workspaces_updated_at before update on workspaces for each row execute function set_updated_at();

create table conversations (
    id         uuid primary key default gen_random_uuid(),
    owner_id   uuid not null references users (id) on delete cascade,
    title      text not null default 'New conversation',
    -- Highest event sequence number stored for this conversation.
    last_seq   bigint not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index conversations_owner_id_idx on conversations (owner_id, updated_at desc);
create trigger conversations_updated_at before update on conversations for each row execute function set_updated_at();

create table messages (
    id              uuid primary key default gen_random_uuid(),
    owner_id        uuid not null references users (id) on delete cascade,
    conversation_id uuid not null references conversations (id) on delete cascade,
    -- Order of the messages (several can share a created_at within a transaction).
    position        bigint generated always as identity,
    role            text not null check (role in ('user', 'assistant')),
    -- Text of the message; tool activity goes in `events`.
    content         text not null default '',
    -- The turn's tool_use/tool_result/document/voice events, in order.
    events          jsonb not null default '[]',
    -- False while an answer streams, and forever for a turn that was cut off.
    complete        boolean not null default true,
    input_tokens    bigint,
    output_tokens   bigint,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index messages_owner_id_idx on messages (owner_id);
create index messages_conversation_id_idx on messages (conversation_id, position);
create trigger messages_updated_at before update on messages for each row execute function set_updated_at();

create table documents (
    id              uuid primary key default gen_random_uuid(),
    owner_id        uuid not null references users (id) on delete cascade,
    conversation_id uuid references conversations (id) on delete set null,
    filename        text not null check (length(filename) between 1 and 255),
    doc_type        text not null check (doc_type in ('text', 'markdown', 'code')),
    content         text not null,
    search          tsvector generated always as (
                        setweight(to_tsvector('simple', filename), 'A') ||
                        setweight(to_tsvector('english', content), 'B')
                    ) stored,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index documents_owner_id_idx on documents (owner_id, updated_at desc);
create index documents_search_idx on documents using gin (search);
create trigger documents_updated_at before update on documents for each row execute function set_updated_at();

create table files (
    id           uuid primary key default gen_random_uuid(),
    owner_id     uuid not null references users (id) on delete cascade,
    kind         text not null check (kind in ('upload', 'workspace', 'voice')),
    -- Path relative to the workspace (uploads/report.pdf, src/main.py, voice/…).
    path         text not null,
    storage_key  text not null unique,
    size         bigint not null check (size >= 0),
    content_type text not null,
    sha256       bytea,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    unique (owner_id, kind, path)
);
create index files_owner_id_idx on files (owner_id, updated_at desc);
create trigger files_updated_at before update on files for each row execute function set_updated_at();

-- One row per model call through the gateway.
create table usage (
    id              uuid primary key default gen_random_uuid(),
    owner_id        uuid not null references users (id) on delete cascade,
    conversation_id uuid references conversations (id) on delete set null,
    turn_id         uuid,
    model           text not null,
    input_tokens    bigint not null default 0 check (input_tokens >= 0),
    output_tokens   bigint not null default 0 check (output_tokens >= 0),
    -- Cost in millionths of a US dollar.
    cost_micros     bigint not null default 0 check (cost_micros >= 0),
    created_at      timestamptz not null default now()
);
create index usage_owner_id_idx on usage (owner_id, created_at);

-- Each Stripe webhook event is applied once.
create table stripe_events (
    id          text primary key,
    type        text not null,
    received_at timestamptz not null default now()
);

-- Failed logins per account and per client address: 10 in 15 minutes lock for 15 minutes.
create table login_throttle (
    key          text primary key,
    failures     integer not null default 0,
    window_start timestamptz not null default now(),
    locked_until timestamptz
);

-- Router-wide settings shared by every router process (e.g. the generated token signing key).
create table router_settings (
    key   text primary key,
    value text not null
);
