-- Issue 20: warm wake. The local backend keeps a pool of pre-started, unassigned
-- sandboxes (JARVIS_WARM_POOL); each runs as a host uid of its own from the same
-- range as workspaces (JARVIS_SANDBOX_UIDS), reserved here while no workspace has
-- it. A claim moves the uid to the waking workspace (workspaces.host_uid) and
-- deletes the row in one statement; the allocation of workspace uids skips the
-- uids reserved here. A router that starts again frees the rows of the slots it
-- finds left on its disk.
create table warm_slots (
    host_uid   bigint primary key check (host_uid >= 1000 and host_uid < 4294967295),
    created_at timestamptz not null default now()
);
