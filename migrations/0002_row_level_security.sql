-- Row-level security: the second line of defence behind the router's own
-- `where owner_id = $user` filters.
--
-- Requests made for a user run in a transaction that switches to the
-- unprivileged role `jarvis_user` and sets `app.user_id`
-- (`select set_config('role', 'jarvis_user', true), set_config('app.user_id', $1, true)`).
-- Under that role every owned table shows only that user's rows; with no user set
-- it shows none. The connection's own role (the tables' owner) is not subject to
-- these policies: the router uses it only for work that is not done for one user
-- (sign-in, webhooks, sync bookkeeping), and filters by owner there too.

do $$
begin
    create role jarvis_user nologin;
exception
    -- Roles are shared by every database of the cluster; another database (or a
    -- concurrent migration of one) may have made it already.
    when duplicate_object or unique_violation then null;
end
$$;

-- The connecting role must be allowed to switch to it (a no-op for superusers).
grant jarvis_user to current_user;

do $$
begin
    execute format('grant usage on schema %I to jarvis_user', current_schema());
end
$$;

-- The user of the current transaction, or null when none is set.
create function app_user_id() returns uuid
language sql stable
as $$ select nullif(current_setting('app.user_id', true), '')::uuid $$;

grant select, update on users to jarvis_user;
grant select, insert, update, delete on
    workspaces, conversations, messages, documents, files, usage, refresh_tokens
    to jarvis_user;

alter table users enable row level security;
create policy users_self on users
    using (id = app_user_id()) with check (id = app_user_id());

alter table workspaces enable row level security;
create policy workspaces_owner on workspaces
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());

alter table conversations enable row level security;
create policy conversations_owner on conversations
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());

alter table messages enable row level security;
create policy messages_owner on messages
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());

alter table documents enable row level security;
create policy documents_owner on documents
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());

alter table files enable row level security;
create policy files_owner on files
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());

alter table usage enable row level security;
create policy usage_owner on usage
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());

alter table refresh_tokens enable row level security;
create policy refresh_tokens_owner on refresh_tokens
    using (owner_id = app_user_id()) with check (owner_id = app_user_id());
