-- Issue 20: batches of events that sandboxes push at the same time are stored
-- together (`router/src/transcript/writer.rs`): one statement locks every
-- batch's conversation and reads where its events go (`lock_answers`), one
-- writes them all (`write_answers`), in one transaction with one commit,
-- whatever users they are of. Both run as their caller (`jarvis_user`, under
-- row-level security) and set `app.user_id` to each batch's user before its
-- statements. Each does for each element what `transcript/store.rs` does for
-- one batch (`lock_with_answer`, `Write::flush_and_raise`).

-- Elements {"user_id", "conversation_id", "message_id"}; one row per element in
-- order (`job_index` from 1): the conversation's `last_seq` (null when it is not
-- the user's: nothing else is read or locked) and the answer the events go to:
-- `message_id` when it is an assistant message of the conversation, else its
-- newest (nulls when it has none). The answer is read by a statement after the
-- lock was granted, so it sees what the transaction the lock waited for wrote.
create function lock_answers(jobs jsonb)
returns table (
    job_index     integer,
    job_last_seq  bigint,
    answer_id     uuid,
    answer_ended  boolean,
    answer_chars  bigint
)
language plpgsql
as $$
declare
    job jsonb;
    n integer;
    owner uuid;
    conv uuid;
begin
    for job, n in select value, ordinality from jsonb_array_elements(jobs) with ordinality loop
        owner := (job ->> 'user_id')::uuid;
        conv := (job ->> 'conversation_id')::uuid;
        perform set_config('app.user_id', owner::text, true);
        job_index := n;
        answer_id := null; answer_ended := null; answer_chars := null;
        select c.last_seq into job_last_seq from conversations c
        where c.id = conv and c.owner_id = owner for update;
        if found then
            select m.id, m.complete or m.events @> '[{"type":"error"}]', char_length(m.content)::bigint
            into answer_id, answer_ended, answer_chars
            from messages m
            where m.conversation_id = conv and m.owner_id = owner and m.role = 'assistant'
            order by (m.id is not distinct from (job ->> 'message_id')::uuid) desc, m.position desc
            limit 1;
        end if;
        return next;
    end loop;
end
$$;

-- Elements {"user_id", "message_id", "text", "events", "done", "input_tokens",
-- "output_tokens", "conversation_id", "last_seq"}: appends `text` and `events`
-- to the answer (when `message_id` is set), ends it when `done` (an answer that
-- ends with nothing in it marked stopped), and raises the conversation's
-- `last_seq` (when `conversation_id` is set).
create function write_answers(writes jsonb)
returns void
language plpgsql
as $$
declare
    w jsonb;
    owner uuid;
    done boolean;
begin
    for w in select value from jsonb_array_elements(writes) loop
        owner := (w ->> 'user_id')::uuid;
        done := coalesce((w ->> 'done')::boolean, false);
        perform set_config('app.user_id', owner::text, true);
        if w ->> 'message_id' is not null then
            update messages set content = content || (w ->> 'text'),
                events = case when done and content || (w ->> 'text') = ''
                                   and events || (w -> 'events') = '[]'::jsonb
                         then '[{"type":"stopped"}]'::jsonb else events || (w -> 'events') end,
                complete = complete or done,
                input_tokens = coalesce((w ->> 'input_tokens')::bigint, input_tokens),
                output_tokens = coalesce((w ->> 'output_tokens')::bigint, output_tokens)
            where id = (w ->> 'message_id')::uuid and owner_id = owner;
        end if;
        if w ->> 'conversation_id' is not null then
            update conversations set last_seq = (w ->> 'last_seq')::bigint
            where id = (w ->> 'conversation_id')::uuid and owner_id = owner;
        end if;
    end loop;
end
$$;
