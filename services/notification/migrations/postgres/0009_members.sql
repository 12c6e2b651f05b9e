-- The members of each tenant: the users the suite saw at work (each service reports its users'
-- requests with their roles on its feed), with the roles of their latest report, kept in the
-- transaction that moves the feed's checkpoint. A rule's `roles/{role}` recipient reaches the
-- members holding the role seen in the last 90 days.
CREATE TABLE members (
    tenant_id text NOT NULL,
    user_id   text NOT NULL,
    -- Role names, comma-separated (`manager,rep`).
    roles     text NOT NULL,
    last_seen date NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
ALTER TABLE members ENABLE ROW LEVEL SECURITY;
ALTER TABLE members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON members
    USING (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on');
GRANT SELECT, INSERT, UPDATE, DELETE ON members TO crm_notification_app;
