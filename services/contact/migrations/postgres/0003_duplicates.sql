-- Duplicate detection and merge lineage. Match keys (lower-cased emails, E.164 phones and a
-- name blocking key) are computed by the service and written with every contact change;
-- this schema ships in the same release as 0001, so no contact predates its keys.

ALTER TABLE contacts ADD COLUMN merged_into uuid;
CREATE INDEX contacts_merged_into ON contacts (tenant_id, merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE contact_keys (
    tenant_id  text NOT NULL,
    kind       text NOT NULL,
    value      text NOT NULL,
    contact_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, kind, value, contact_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX contact_keys_contact ON contact_keys (tenant_id, contact_id);

ALTER TABLE contact_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contact_keys
    USING (tenant_id = current_setting('crm.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true));
GRANT SELECT, INSERT, DELETE ON contact_keys TO crm_contact_app;
