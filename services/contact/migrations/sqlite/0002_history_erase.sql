-- Audit history of contacts and companies, and erased-contact tombstones.

ALTER TABLE contacts ADD COLUMN erase_time INTEGER;

CREATE TABLE history (
    tenant_id     TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    resource_kind TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    create_time   INTEGER NOT NULL,
    changes       TEXT    NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX history_resource ON history (tenant_id, resource_kind, resource_id, id DESC);
