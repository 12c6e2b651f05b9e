-- How each event's payload is written (see the platform's outbox migration, which runs after
-- this one): 0 for the events written so far, in this service's earlier form; the platform
-- writes 1, proto3 JSON of the message the type names. SQLite cannot add a column only where
-- it is missing, so the service whose own migration created the outbox adds it here.
ALTER TABLE outbox_events ADD COLUMN format INTEGER NOT NULL DEFAULT 0;
