-- Issue 8: a user's standing choice to hear answers spoken (the browser's voice
-- toggle; a message's own `voice` flag wins over it for that turn).
alter table users add column voice_answers boolean not null default false;
