-- Issue 21: the sandboxes' way out to the internet is the router's egress proxy
-- (router/src/egress). Two per-user tables, under row-level security like the others
-- (0002_row_level_security.sql). A user has one workspace (workspaces.owner_id is
-- unique), so owner_id names the workspace too.
--
-- The plan's allow-list is not here: plans are configuration (JARVIS_PLANS,
-- router/src/plans.rs, field `egress_allow`), there is no plans table to add a
-- column to.

-- The workspace's own decisions about hosts: `allow` always, or `deny` (which
-- wins over the plan's allow-list). `pattern` is a host, `*.domain` or host:port.
create table egress_approvals (
    id          uuid primary key default gen_random_uuid(),
    owner_id    uuid not null references users (id) on delete cascade,
    pattern     text not null check (length(pattern) between 1 and 300),
    decision    text not null check (decision in ('allow', 'deny')),
    created_at  timestamptz not null default now(),
    unique (owner_id, pattern)
);

-- One row per connection through the proxy: written when it ends (bytes counted
-- on the wire to and from the upstream: request and response heads included for
-- plain HTTP, TLS records for CONNECT), or when it is refused (bytes 0).
create table egress_connections (
    id          bigint generated always as identity primary key,
    owner_id    uuid not null references users (id) on delete cascade,
    host        text not null,
    port        integer not null check (port between 0 and 65535),
    -- `allowed`, `denied` (the policy, the deny-list, a loop, the cap) or
    -- `failed` (allowed but unresolvable or unreachable).
    decision    text not null check (decision in ('allowed', 'denied', 'failed')),
    -- Why: `plan` / `approved` when allowed, else the refusal's reason.
    reason      text not null,
    bytes_up    bigint not null default 0 check (bytes_up >= 0),
    bytes_down  bigint not null default 0 check (bytes_down >= 0),
    started_at  timestamptz not null,
    ended_at    timestamptz not null
);
create index egress_connections_owner_started_idx on egress_connections (owner_id, started_at desc);

grant select, insert, update, delete on egress_approvals to jarvis_user;
-- The audit is append-only for the role requests run as.
grant select, insert on egress_connections to jarvis_user;

alter table egress_approvals enable row level security;
create policy egress_approvals_owner on egress_approvals
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());

alter table egress_connections enable row level security;
create policy egress_connections_owner on egress_connections
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());
