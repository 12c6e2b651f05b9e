-- An endpoint's health and pace (see the PostgreSQL migration).
ALTER TABLE webhook_endpoints ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
ALTER TABLE webhook_endpoints ADD COLUMN max_per_second INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhook_endpoints ADD COLUMN failing_since INTEGER;
ALTER TABLE webhook_endpoints ADD COLUMN disable_time INTEGER;
ALTER TABLE webhook_endpoints ADD COLUMN disable_reason TEXT NOT NULL DEFAULT '';
CREATE INDEX deliveries_endpoint ON deliveries (tenant_id, endpoint_id, create_time);
