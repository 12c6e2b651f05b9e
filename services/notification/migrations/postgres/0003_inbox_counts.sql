-- Each user's unread notifications, kept with every change of the inbox (in the same
-- transaction), so the count is one row read however large the inbox grows.
CREATE TABLE inbox_counts (
    tenant_id text   NOT NULL,
    user_id   text   NOT NULL,
    unread    bigint NOT NULL CHECK (unread >= 0),
    PRIMARY KEY (tenant_id, user_id)
);
INSERT INTO inbox_counts (tenant_id, user_id, unread)
SELECT tenant_id, user_id, count(*) FROM notifications WHERE NOT read GROUP BY tenant_id, user_id;
ALTER TABLE inbox_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE inbox_counts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON inbox_counts
    USING (tenant_id = current_setting('crm.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON inbox_counts TO crm_notification_app;
