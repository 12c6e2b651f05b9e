-- Pipeline service schema on SQLite (see the PostgreSQL migration of the same name). Times
-- are microseconds since the epoch; derived columns are virtual and indexed.

CREATE TABLE pipelines (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE leads (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    owner       TEXT GENERATED ALWAYS AS (json_extract(body, '$.owner')) VIRTUAL,
    status      TEXT GENERATED ALWAYS AS (json_extract(body, '$.status')) VIRTUAL,
    contact_id  TEXT GENERATED ALWAYS AS (json_extract(body, '$.contact')) VIRTUAL,
    company_id  TEXT GENERATED ALWAYS AS (json_extract(body, '$.company')) VIRTUAL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX leads_owner ON leads (tenant_id, owner, id);
CREATE INDEX leads_status ON leads (tenant_id, status, id);
CREATE INDEX leads_contact ON leads (tenant_id, contact_id);
CREATE INDEX leads_company ON leads (tenant_id, company_id);

CREATE TABLE deals (
    tenant_id    TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    revision     INTEGER NOT NULL,
    create_time  INTEGER NOT NULL,
    update_time  INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    owner        TEXT GENERATED ALWAYS AS (json_extract(body, '$.owner')) VIRTUAL,
    status       TEXT GENERATED ALWAYS AS (json_extract(body, '$.status')) VIRTUAL,
    pipeline_id  TEXT GENERATED ALWAYS AS (json_extract(body, '$.pipeline')) VIRTUAL,
    stage_id     TEXT GENERATED ALWAYS AS (json_extract(body, '$.stage')) VIRTUAL,
    contact_id   TEXT GENERATED ALWAYS AS (json_extract(body, '$.contact')) VIRTUAL,
    company_id   TEXT GENERATED ALWAYS AS (json_extract(body, '$.company')) VIRTUAL,
    amount_minor INTEGER GENERATED ALWAYS AS (json_extract(body, '$.amount.minor')) VIRTUAL,
    currency     TEXT GENERATED ALWAYS AS (json_extract(body, '$.amount.currency')) VIRTUAL,
    close_date   TEXT GENERATED ALWAYS AS (json_extract(body, '$.close_date')) VIRTUAL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX deals_board ON deals (tenant_id, pipeline_id, status, stage_id, close_date, id, currency, amount_minor, owner);
CREATE INDEX deals_owner ON deals (tenant_id, owner, id);
CREATE INDEX deals_status ON deals (tenant_id, status, id);
CREATE INDEX deals_contact ON deals (tenant_id, contact_id);
CREATE INDEX deals_company ON deals (tenant_id, company_id);

-- The board's counts and totals (see the PostgreSQL migration of the same name).
CREATE TABLE board_counts (
    tenant_id   TEXT    NOT NULL,
    pipeline_id TEXT    NOT NULL,
    stage_id    TEXT    NOT NULL,
    currency    TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    shard       INTEGER NOT NULL,
    deals       INTEGER NOT NULL,
    amount      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, pipeline_id, stage_id, currency, owner, shard)
);

CREATE TRIGGER deals_leave_board AFTER UPDATE ON deals WHEN OLD.status = 'open'
BEGIN
    UPDATE board_counts SET deals = deals - 1, amount = amount - OLD.amount_minor
    WHERE tenant_id = OLD.tenant_id AND pipeline_id = OLD.pipeline_id AND stage_id = OLD.stage_id
      AND currency = OLD.currency AND owner = OLD.owner AND shard = unicode(substr(OLD.id, 36, 1)) % 8;
END;

CREATE TRIGGER deals_deleted_from_board AFTER DELETE ON deals WHEN OLD.status = 'open'
BEGIN
    UPDATE board_counts SET deals = deals - 1, amount = amount - OLD.amount_minor
    WHERE tenant_id = OLD.tenant_id AND pipeline_id = OLD.pipeline_id AND stage_id = OLD.stage_id
      AND currency = OLD.currency AND owner = OLD.owner AND shard = unicode(substr(OLD.id, 36, 1)) % 8;
END;

CREATE TRIGGER deals_join_board_on_insert AFTER INSERT ON deals WHEN NEW.status = 'open'
BEGIN
    INSERT INTO board_counts (tenant_id, pipeline_id, stage_id, currency, owner, shard, deals, amount)
    VALUES (NEW.tenant_id, NEW.pipeline_id, NEW.stage_id, NEW.currency, NEW.owner,
            unicode(substr(NEW.id, 36, 1)) % 8, 1, NEW.amount_minor)
    ON CONFLICT (tenant_id, pipeline_id, stage_id, currency, owner, shard)
    DO UPDATE SET deals = deals + 1, amount = amount + excluded.amount;
END;

CREATE TRIGGER deals_join_board_on_update AFTER UPDATE ON deals WHEN NEW.status = 'open'
BEGIN
    INSERT INTO board_counts (tenant_id, pipeline_id, stage_id, currency, owner, shard, deals, amount)
    VALUES (NEW.tenant_id, NEW.pipeline_id, NEW.stage_id, NEW.currency, NEW.owner,
            unicode(substr(NEW.id, 36, 1)) % 8, 1, NEW.amount_minor)
    ON CONFLICT (tenant_id, pipeline_id, stage_id, currency, owner, shard)
    DO UPDATE SET deals = deals + 1, amount = amount + excluded.amount;
END;

CREATE TABLE deal_transitions (
    tenant_id       TEXT    NOT NULL,
    deal_id         TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    from_stage      TEXT,
    to_stage        TEXT    NOT NULL,
    from_stage_name TEXT    NOT NULL,
    to_stage_name   TEXT    NOT NULL,
    amount_minor    INTEGER NOT NULL,
    currency        TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    time            INTEGER NOT NULL,
    reason          TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, seq)
);

CREATE TABLE products (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    sku         TEXT GENERATED ALWAYS AS (json_extract(body, '$.sku')) VIRTUAL,
    active      INTEGER GENERATED ALWAYS AS (json_extract(body, '$.active')) VIRTUAL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX products_sku ON products (tenant_id, sku);

CREATE TABLE tasks (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    owner       TEXT GENERATED ALWAYS AS (json_extract(body, '$.assignee')) VIRTUAL,
    status      TEXT GENERATED ALWAYS AS (json_extract(body, '$.status')) VIRTUAL,
    contact_id  TEXT GENERATED ALWAYS AS (json_extract(body, '$.contact')) VIRTUAL,
    due_order   INTEGER GENERATED ALWAYS AS (coalesce(json_extract(body, '$.due'), 9223372036854775807)) VIRTUAL,
    pending_due INTEGER GENERATED ALWAYS AS (
        CASE WHEN json_extract(body, '$.status') = 'open' AND json_extract(body, '$.due') IS NOT NULL
                  AND (json_extract(body, '$.due_notified') IS NULL
                       OR json_extract(body, '$.due_notified') <> json_extract(body, '$.due'))
             THEN json_extract(body, '$.due') END) VIRTUAL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX tasks_owner ON tasks (tenant_id, owner, due_order, id);
CREATE INDEX tasks_due ON tasks (tenant_id, due_order, id);
CREATE INDEX tasks_contact ON tasks (tenant_id, contact_id);
CREATE INDEX tasks_pending_due ON tasks (pending_due) WHERE pending_due IS NOT NULL;

CREATE TABLE forecasts (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    owner       TEXT GENERATED ALWAYS AS (json_extract(body, '$.owner')) VIRTUAL,
    period      TEXT GENERATED ALWAYS AS (json_extract(body, '$.period')) VIRTUAL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX forecasts_owner ON forecasts (tenant_id, owner, period);

CREATE TABLE quotas (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    owner       TEXT GENERATED ALWAYS AS (json_extract(body, '$.owner')) VIRTUAL,
    period      TEXT GENERATED ALWAYS AS (json_extract(body, '$.period')) VIRTUAL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX quotas_owner_period ON quotas (tenant_id, owner, period);

CREATE TABLE idempotency_keys (
    tenant_id   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    resource_id TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, kind, request_id)
);

CREATE TABLE outbox_events (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    seq         INTEGER NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    time        INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    traceparent TEXT    NOT NULL DEFAULT '',
    payload     TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_events_tenant_seq ON outbox_events (tenant_id, seq);

CREATE TABLE outbox_head (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    seq      INTEGER NOT NULL
);
INSERT INTO outbox_head (only_row, seq) VALUES (1, 0);

CREATE TABLE audit_log (
    tenant_id TEXT    NOT NULL,
    id        TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    time      INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    payload   TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_log_subject ON audit_log (tenant_id, subject, time);

CREATE TRIGGER outbox_to_audit AFTER INSERT ON outbox_events
BEGIN
    INSERT INTO audit_log (tenant_id, id, type, subject, time, actor, payload)
    VALUES (NEW.tenant_id, NEW.id, NEW.type, NEW.subject, NEW.time, NEW.actor, NEW.payload);
END;

CREATE TABLE contact_merges (
    tenant_id   TEXT NOT NULL,
    merged_id   TEXT NOT NULL,
    survivor_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, merged_id)
);
CREATE INDEX contact_merges_survivor ON contact_merges (tenant_id, survivor_id);

CREATE TABLE feed_checkpoints (
    consumer    TEXT    PRIMARY KEY,
    seq         INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);
