-- Duplicate detection and merge lineage; see the PostgreSQL migration of the same name.

ALTER TABLE contacts ADD COLUMN merged_into TEXT;
CREATE INDEX contacts_merged_into ON contacts (tenant_id, merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE contact_keys (
    tenant_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, kind, value, contact_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX contact_keys_contact ON contact_keys (tenant_id, contact_id);
