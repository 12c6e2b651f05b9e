-- The pending deliveries' queue, apart from the deliveries: one narrow row per pending
-- delivery, with when it is due (NULL while its endpoint is disabled) and until when a worker
-- leases it, in the total order (due time, id) that claims scan. A delivery delivered or
-- failed leaves the queue, and its own row's update touches no index (a heap-only update):
-- before, every outcome wrote a new entry into each of the deliveries' indexes.
CREATE TABLE delivery_queue (
    tenant_id         text        NOT NULL,
    id                uuid        NOT NULL,
    next_attempt_time timestamptz,
    lease_until       timestamptz,
    PRIMARY KEY (tenant_id, id)
) WITH (fillfactor = 70);
CREATE INDEX delivery_queue_due ON delivery_queue (next_attempt_time, id);

ALTER TABLE delivery_queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE delivery_queue FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON delivery_queue TO crm_notification_app;
CREATE POLICY tenant_isolation ON delivery_queue
    USING (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on');

-- Every tenant's pending deliveries (row-level security applies to an owner too).
SET LOCAL crm.all_tenants = 'on';
INSERT INTO delivery_queue (tenant_id, id, next_attempt_time, lease_until)
SELECT tenant_id, id, next_attempt_time, lease_until FROM deliveries WHERE state = 'pending';
DROP INDEX deliveries_due;
ALTER TABLE deliveries DROP COLUMN lease_until;
