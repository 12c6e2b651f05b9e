-- Contact service schema for the embedded SQLite backend. Times are unix microseconds (UTC);
-- lists (emails, phones, tags) and maps (attributes, consent) are JSON text.

CREATE TABLE companies (
    tenant_id    TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    domain       TEXT,
    industry     TEXT    NOT NULL DEFAULT '',
    size_band    TEXT,
    owner        TEXT    NOT NULL,
    tags         TEXT    NOT NULL DEFAULT '[]',
    attributes   TEXT    NOT NULL DEFAULT '{}',
    create_time  INTEGER NOT NULL,
    update_time  INTEGER NOT NULL,
    revision     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX companies_create_time ON companies (tenant_id, create_time, id);
CREATE INDEX companies_update_time ON companies (tenant_id, update_time, id);
CREATE INDEX companies_display_name ON companies (tenant_id, display_name, id);
CREATE INDEX companies_owner ON companies (tenant_id, owner);
CREATE INDEX companies_domain ON companies (tenant_id, domain);

CREATE TABLE contacts (
    tenant_id       TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    given_name      TEXT    NOT NULL DEFAULT '',
    family_name     TEXT    NOT NULL DEFAULT '',
    emails          TEXT    NOT NULL DEFAULT '[]',
    phones          TEXT    NOT NULL DEFAULT '[]',
    primary_email   TEXT,
    title           TEXT    NOT NULL DEFAULT '',
    company_id      TEXT,
    company_name    TEXT,
    lifecycle_stage TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    tags            TEXT    NOT NULL DEFAULT '[]',
    attributes      TEXT    NOT NULL DEFAULT '{}',
    consent         TEXT    NOT NULL DEFAULT '{}',
    search_text     TEXT    NOT NULL DEFAULT '',
    create_time     INTEGER NOT NULL,
    update_time     INTEGER NOT NULL,
    revision        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, company_id) REFERENCES companies (tenant_id, id)
);
CREATE INDEX contacts_create_time ON contacts (tenant_id, create_time, id);
CREATE INDEX contacts_update_time ON contacts (tenant_id, update_time, id);
CREATE INDEX contacts_family_name ON contacts (tenant_id, family_name, id);
CREATE INDEX contacts_given_name ON contacts (tenant_id, given_name, id);
CREATE INDEX contacts_owner ON contacts (tenant_id, owner);
CREATE INDEX contacts_company ON contacts (tenant_id, company_id);
CREATE INDEX contacts_primary_email ON contacts (tenant_id, lower(primary_email));

-- Full-text index over each contact's search text and company name, kept by triggers.
CREATE VIRTUAL TABLE contacts_fts USING fts5(doc, tokenize = 'unicode61 remove_diacritics 2');
CREATE TRIGGER contacts_fts_insert AFTER INSERT ON contacts BEGIN
    INSERT INTO contacts_fts (rowid, doc) VALUES (new.rowid, new.search_text || ' ' || coalesce(new.company_name, ''));
END;
CREATE TRIGGER contacts_fts_update AFTER UPDATE OF search_text, company_name ON contacts BEGIN
    DELETE FROM contacts_fts WHERE rowid = old.rowid;
    INSERT INTO contacts_fts (rowid, doc) VALUES (new.rowid, new.search_text || ' ' || coalesce(new.company_name, ''));
END;
CREATE TRIGGER contacts_fts_delete AFTER DELETE ON contacts BEGIN
    DELETE FROM contacts_fts WHERE rowid = old.rowid;
END;

CREATE TABLE interactions (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    contact_id  TEXT    NOT NULL,
    company_id  TEXT,
    kind        TEXT    NOT NULL,
    direction   TEXT    NOT NULL,
    channel     TEXT,
    occur_time  INTEGER NOT NULL,
    duration_ms INTEGER,
    subject     TEXT    NOT NULL DEFAULT '',
    body        TEXT    NOT NULL DEFAULT '',
    outcome     TEXT    NOT NULL DEFAULT '',
    campaign_id TEXT    NOT NULL DEFAULT '',
    actor       TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX interactions_contact ON interactions (tenant_id, contact_id, occur_time DESC, id DESC);
CREATE INDEX interactions_company ON interactions (tenant_id, company_id, occur_time DESC, id DESC);

CREATE TABLE idempotency_keys (
    tenant_id   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    resource_id TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind, request_id)
);
