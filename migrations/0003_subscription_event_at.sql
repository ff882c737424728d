-- Stripe delivers webhook events in no particular order: each user keeps the
-- `created` time of the event that last set their subscription state, and older
-- events no longer change it (see router/src/billing/events.rs).
alter table users add column subscription_event_at timestamptz;
