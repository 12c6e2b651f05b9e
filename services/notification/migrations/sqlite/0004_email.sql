-- Email (see the PostgreSQL migration).

ALTER TABLE rules ADD COLUMN channels TEXT NOT NULL DEFAULT '["in_app"]';
ALTER TABLE rules ADD COLUMN email_template TEXT NOT NULL DEFAULT '{}';
ALTER TABLE rules ADD COLUMN category TEXT NOT NULL DEFAULT 'general';
ALTER TABLE rules ADD COLUMN critical INTEGER NOT NULL DEFAULT 0;

CREATE TABLE emails (
    tenant_id         TEXT    NOT NULL,
    id                TEXT    NOT NULL,
    rule_id           TEXT    NOT NULL,
    recipient         TEXT    NOT NULL,
    user_id           TEXT,
    address           TEXT    NOT NULL,
    event_id          TEXT    NOT NULL,
    event_type        TEXT    NOT NULL,
    subject           TEXT    NOT NULL,
    text_body         TEXT    NOT NULL,
    html_body         TEXT    NOT NULL,
    category          TEXT    NOT NULL,
    critical          INTEGER NOT NULL,
    state             TEXT    NOT NULL
        CHECK (state IN ('pending', 'sent', 'failed', 'refused', 'held', 'digested')),
    held_for          TEXT,
    digest_id         TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT    NOT NULL DEFAULT '',
    next_attempt_time INTEGER,
    lease_until       INTEGER,
    create_time       INTEGER NOT NULL,
    send_time         INTEGER,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, rule_id, event_id, recipient)
);
CREATE INDEX emails_due ON emails (next_attempt_time) WHERE state IN ('pending', 'held');
CREATE INDEX emails_sent ON emails (tenant_id, user_id, send_time) WHERE state = 'sent';

CREATE TABLE notification_preferences (
    tenant_id     TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    email_address TEXT    NOT NULL,
    settings      TEXT    NOT NULL DEFAULT '{}',
    update_time   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
