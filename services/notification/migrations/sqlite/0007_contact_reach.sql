-- What email may reach each contact (see the PostgreSQL migration).
CREATE TABLE contact_reach (
    tenant_id     TEXT    NOT NULL,
    contact       TEXT    NOT NULL,
    email_address TEXT    NOT NULL DEFAULT '',
    email_consent INTEGER NOT NULL DEFAULT 0,
    update_time   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, contact)
);
ALTER TABLE emails ADD COLUMN contact TEXT;
