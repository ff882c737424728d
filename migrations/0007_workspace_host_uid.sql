-- Issue 15: each local sandbox runs as a host uid of its own, from the range the
-- router manages (JARVIS_SANDBOX_UIDS), so process limits, file ownership and
-- signals separate tenants. A workspace keeps its uid for good (its files on disk
-- are owned by it, across router restarts); the unique constraint makes sure no
-- two workspaces ever get the same one. Null until the workspace first wakes on
-- the local backend.
alter table workspaces
    add column host_uid bigint unique check (host_uid >= 1000 and host_uid < 4294967295);
