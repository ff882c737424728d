-- Issue 20: turns that arrive together are opened together. `open_turns` opens
-- every turn of a JSON array in the statement that calls it, so a batch of turns
-- (of any users) costs the database one statement and one commit instead of one
-- transaction each (`router/src/transcript/opener.rs`).
--
-- Each element is {"user_id", "conversation_id", "title", "content", "events"};
-- each turn is opened exactly as `open_turn` opens one (`transcript/store.rs`):
-- the conversation upserted (locking its row, made when new and titled), the
-- user's message, then an empty, incomplete answer, the user's plan and voice
-- setting read with them. The function runs as its caller (`jarvis_user`, under
-- row-level security) and sets `app.user_id` to each turn's user before its
-- statement, so every turn's rows are checked against its own user's policies.
--
-- One row per turn, in the array's order (`turn_index` from 1): `opened` with
-- the rows' ids, or `not_yours` (another user's conversation: refused by the
-- policies, or no row) with nulls, that turn changing nothing (its own
-- subtransaction is rolled back). Any other error fails the whole call; the
-- router then opens each turn of the batch on its own.
create function open_turns(turns jsonb)
returns table (
    turn_index      integer,
    outcome         text,
    turn_last_seq   bigint,
    turn_created    boolean,
    user_tier       text,
    user_voice      boolean,
    user_message_id uuid,
    answer_id       uuid
)
language plpgsql
as $$
declare
    turn jsonb;
    n integer;
    owner uuid;
begin
    for turn, n in select value, ordinality from jsonb_array_elements(turns) with ordinality loop
        owner := (turn ->> 'user_id')::uuid;
        perform set_config('app.user_id', owner::text, true);
        turn_index := n;
        begin
            with conv as (
                insert into conversations as c (id, owner_id, title)
                values ((turn ->> 'conversation_id')::uuid, owner, turn ->> 'title')
                on conflict (id) do update set updated_at = now() where c.owner_id = owner
                returning c.last_seq, c.xmax = 0 as created),
            asked as (
                insert into messages (owner_id, conversation_id, role, content, events)
                select owner, (turn ->> 'conversation_id')::uuid, 'user', turn ->> 'content',
                       turn -> 'events'
                from conv returning id),
            answer as (
                insert into messages (owner_id, conversation_id, role, complete)
                select owner, (turn ->> 'conversation_id')::uuid, 'assistant', false
                from asked returning id)
            select conv.last_seq, conv.created, u.tier, u.voice_answers, asked.id, answer.id
            into turn_last_seq, turn_created, user_tier, user_voice, user_message_id, answer_id
            from users u, conv, asked, answer where u.id = owner;
            outcome := case when found then 'opened' else 'not_yours' end;
        exception when insufficient_privilege then
            outcome := 'not_yours';
            turn_last_seq := null; turn_created := null; user_tier := null;
            user_voice := null; user_message_id := null; answer_id := null;
        end;
        return next;
    end loop;
end
$$;
