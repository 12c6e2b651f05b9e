-- Events come from the application (see the PostgreSQL migration 0013): the triggers that
-- made events out of audit entries and interactions go, and with them the table that handed
-- them the request's trace. The outbox takes the platform's shape (crm_platform::outbox::
-- migrations): `format` 1 for events written from now on, 0 for those the triggers wrote,
-- which stay readable until the retention prunes them.
DROP TRIGGER history_to_outbox;
DROP TRIGGER interactions_to_outbox;
DROP TABLE outbox_context;
ALTER TABLE outbox_events ADD COLUMN format INTEGER NOT NULL DEFAULT 0;
