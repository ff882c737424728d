-- Issue 19: regenerate and edit-and-resend. A message sent in the place of an
-- earlier user message (`replaces` on the browser's `message`) hides that message
-- and every message after it in its conversation: they get `superseded_by` = the
-- new user message. They are kept, not deleted: their tokens were spent (usage
-- counts them), and the rows could show earlier versions. When the new message is
-- taken back (the sandbox refused it) its row is deleted and `on delete set null`
-- brings the old messages back, in the same transaction.
alter table messages
    add column superseded_by uuid references messages (id) on delete set null;

-- Deleting a message looks up the rows it superseded; most rows supersede nothing.
create index messages_superseded_by on messages (superseded_by)
    where superseded_by is not null;
