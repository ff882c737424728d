-- Issue 21: a connection to a host outside the lists waits while the user is asked
-- in the browser (router/src/egress/ask.rs). One row per question, so that a
-- browser on another router replica can answer it: the replica holding the
-- connection reads the row (woken by NOTIFY jarvis_egress, or polling).
create table egress_requests (
    id          uuid primary key,
    owner_id    uuid not null references users (id) on delete cascade,
    host        text not null,
    port        integer not null check (port between 0 and 65535),
    -- `pending` until answered (`once`, `always`, `deny`) or given up:
    -- `expired` (no answer in time) or `unseen` (no browser open to ask).
    status      text not null default 'pending'
                check (status in ('pending', 'once', 'always', 'deny', 'expired', 'unseen')),
    -- When a browser (of any replica) was first shown the question.
    shown_at    timestamptz,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    decided_at  timestamptz
);
create index egress_requests_owner_pending_idx on egress_requests (owner_id) where status = 'pending';

grant select, insert, update, delete on egress_requests to jarvis_user;

alter table egress_requests enable row level security;
create policy egress_requests_owner on egress_requests
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());
