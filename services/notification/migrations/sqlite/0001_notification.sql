-- Notification service schema (see the PostgreSQL migration); times are microseconds since
-- the epoch, lists JSON text.

CREATE TABLE webhook_endpoints (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    event_types TEXT    NOT NULL,
    description TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE rules (
    tenant_id    TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    event_types  TEXT    NOT NULL,
    condition    TEXT    NOT NULL,
    recipients   TEXT    NOT NULL,
    created_by   TEXT    NOT NULL,
    create_time  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE deliveries (
    tenant_id         TEXT    NOT NULL,
    id                TEXT    NOT NULL,
    rule_id           TEXT    NOT NULL,
    endpoint_id       TEXT    NOT NULL,
    event_id          TEXT    NOT NULL,
    event_type        TEXT    NOT NULL,
    body              TEXT    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_time INTEGER,
    lease_until       INTEGER,
    create_time       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, rule_id, event_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_time) WHERE state = 'pending';

CREATE TABLE delivery_attempts (
    tenant_id     TEXT    NOT NULL,
    delivery_id   TEXT    NOT NULL,
    attempt       INTEGER NOT NULL,
    time          INTEGER NOT NULL,
    status_code   INTEGER NOT NULL,
    error         TEXT    NOT NULL,
    latency_ms    INTEGER NOT NULL,
    response_head TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, delivery_id, attempt)
);

CREATE TABLE notifications (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    rule_id     TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    read        INTEGER NOT NULL DEFAULT 0,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, rule_id, event_id, user_id)
);
CREATE INDEX notifications_inbox ON notifications (tenant_id, user_id, id DESC);
CREATE INDEX notifications_unread ON notifications (tenant_id, user_id, id DESC) WHERE read = 0;

CREATE TABLE feed_checkpoints (
    consumer    TEXT    PRIMARY KEY,
    seq         INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);
