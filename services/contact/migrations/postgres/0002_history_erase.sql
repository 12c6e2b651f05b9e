-- Audit history of contacts and companies, and erased-contact tombstones.

ALTER TABLE contacts ADD COLUMN erase_time timestamptz;

CREATE TABLE history (
    tenant_id     text        NOT NULL,
    id            uuid        NOT NULL,
    resource_kind text        NOT NULL,
    resource_id   uuid        NOT NULL,
    action        text        NOT NULL,
    actor         text        NOT NULL,
    create_time   timestamptz NOT NULL,
    changes       jsonb       NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX history_resource ON history (tenant_id, resource_kind, resource_id, id DESC);

ALTER TABLE history ENABLE ROW LEVEL SECURITY;
ALTER TABLE history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON history
    USING (tenant_id = current_setting('crm.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true));
GRANT SELECT, INSERT, UPDATE ON history TO crm_contact_app;
