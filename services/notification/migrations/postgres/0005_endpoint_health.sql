-- An endpoint's health and pace: who made it (told when it is disabled), how many deliveries
-- a second it takes at most, since when it has failed without a success, and when (and why)
-- it was disabled after failing for five days.
ALTER TABLE webhook_endpoints ADD COLUMN created_by text NOT NULL DEFAULT '';
ALTER TABLE webhook_endpoints ADD COLUMN max_per_second integer NOT NULL DEFAULT 0;
ALTER TABLE webhook_endpoints ADD COLUMN failing_since timestamptz;
ALTER TABLE webhook_endpoints ADD COLUMN disable_time timestamptz;
ALTER TABLE webhook_endpoints ADD COLUMN disable_reason text NOT NULL DEFAULT '';
-- The deliveries of one endpoint since a time (sent again on demand).
CREATE INDEX deliveries_endpoint ON deliveries (tenant_id, endpoint_id, create_time);
