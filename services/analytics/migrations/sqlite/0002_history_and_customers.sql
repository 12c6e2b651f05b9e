-- As migrations/postgres/0002_history_and_customers.sql: stage order, deal versions, deals'
-- customers, the contact feed's facts, and the pipeline feed applied again from its start.

CREATE TABLE stage_facts (
    tenant_id   TEXT    NOT NULL,
    pipeline_id TEXT    NOT NULL,
    stage_id    TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('open', 'won', 'lost')),
    PRIMARY KEY (tenant_id, pipeline_id, stage_id)
) WITHOUT ROWID;

CREATE TABLE deal_versions (
    tenant_id    TEXT    NOT NULL,
    deal_id      TEXT    NOT NULL,
    version_time INTEGER NOT NULL,
    owner        TEXT    NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency     TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, version_time)
) WITHOUT ROWID;

ALTER TABLE deal_facts ADD COLUMN customer_id TEXT;
CREATE INDEX deal_facts_customer ON deal_facts (tenant_id, customer_id) WHERE customer_id IS NOT NULL;

CREATE TABLE customer_facts (
    tenant_id   TEXT    NOT NULL,
    customer_id TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('contact', 'company')),
    owner       TEXT    NOT NULL,
    lifecycle   TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    company_id  TEXT,
    has_email   INTEGER NOT NULL,
    has_phone   INTEGER NOT NULL,
    has_consent INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    gone        TEXT    CHECK (gone IN ('deleted', 'erased', 'merged')),
    merged_into TEXT,
    PRIMARY KEY (tenant_id, customer_id)
) WITHOUT ROWID;

CREATE TABLE customer_versions (
    tenant_id    TEXT    NOT NULL,
    customer_id  TEXT    NOT NULL,
    version_time INTEGER NOT NULL,
    owner        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, version_time)
) WITHOUT ROWID;

CREATE TABLE lifecycle_facts (
    tenant_id   TEXT    NOT NULL,
    customer_id TEXT    NOT NULL,
    time        INTEGER NOT NULL,
    from_stage  TEXT    NOT NULL,
    to_stage    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, time)
) WITHOUT ROWID;

CREATE TABLE interaction_facts (
    tenant_id      TEXT    NOT NULL,
    interaction_id TEXT    NOT NULL,
    contact_id     TEXT    NOT NULL,
    company_id     TEXT,
    kind           TEXT    NOT NULL,
    direction      TEXT    NOT NULL,
    channel        TEXT    NOT NULL,
    time           INTEGER NOT NULL,
    duration_ms    INTEGER NOT NULL,
    campaign       TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, interaction_id)
) WITHOUT ROWID;
CREATE INDEX interaction_facts_time ON interaction_facts (tenant_id, time);

CREATE TABLE transfer_facts (
    tenant_id  TEXT    NOT NULL,
    resource   TEXT    NOT NULL,
    time       INTEGER NOT NULL,
    from_owner TEXT    NOT NULL,
    to_owner   TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, resource, time)
) WITHOUT ROWID;

CREATE TABLE deal_products (
    tenant_id  TEXT NOT NULL,
    deal_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, product_id)
) WITHOUT ROWID;

CREATE TABLE usage_facts (
    tenant_id TEXT    NOT NULL,
    user_id   TEXT    NOT NULL,
    area      TEXT    NOT NULL,
    day       TEXT    NOT NULL,
    requests  INTEGER NOT NULL,
    changes   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, user_id, area)
) WITHOUT ROWID;

CREATE TABLE settings (
    tenant_id TEXT PRIMARY KEY,
    body      TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE exchange_rates (
    tenant_id   TEXT    NOT NULL,
    currency    TEXT    NOT NULL,
    month       TEXT    NOT NULL,
    rate        REAL    NOT NULL CHECK (rate > 0),
    update_time INTEGER NOT NULL,
    updated_by  TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, currency, month)
) WITHOUT ROWID;

CREATE INDEX deal_transitions_entries ON deal_transitions (tenant_id, time)
    WHERE kind IN ('created', 'moved', 'reopened');

DELETE FROM ingest_skipped;
DELETE FROM ingest_parked;
DELETE FROM feed_checkpoints WHERE consumer = 'analytics<-pipeline';
DROP TABLE ingest_watermarks;
CREATE TABLE ingest_watermarks (
    consumer    TEXT    PRIMARY KEY,
    source      TEXT    NOT NULL,
    sequence    INTEGER NOT NULL,
    commit_time INTEGER NOT NULL,
    events      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
