-- The transactional outbox of a producing service (crm_platform::outbox; see the PostgreSQL
-- migration of the same name). SQLite writers are serialised, so a writer numbers its events
-- as it writes them: the sequence is gap-free and in commit order. A service whose own early
-- migrations created the outbox brought it to this shape itself (SQLite cannot add a column
-- only where it is missing), so this changes nothing there.
CREATE TABLE IF NOT EXISTS outbox_events (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    seq         INTEGER NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    time        INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    traceparent TEXT    NOT NULL DEFAULT '',
    payload     TEXT    NOT NULL,
    format      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
-- A tenant's feed reads its events in sequence order.
CREATE INDEX IF NOT EXISTS outbox_events_tenant_seq ON outbox_events (tenant_id, seq);

CREATE TABLE IF NOT EXISTS outbox_head (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    seq      INTEGER NOT NULL
);
INSERT OR IGNORE INTO outbox_head (only_row, seq) VALUES (1, 0);
