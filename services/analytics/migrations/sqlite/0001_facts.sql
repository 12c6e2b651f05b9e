-- Analytics service schema (SQLite): as migrations/postgres/0001_facts.sql, times in
-- microseconds since the epoch, ids as text.

CREATE TABLE deal_facts (
    tenant_id    TEXT    NOT NULL,
    deal_id      TEXT    NOT NULL,
    pipeline_id  TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    lead_id      TEXT,
    amount_minor INTEGER NOT NULL,
    currency     TEXT    NOT NULL,
    create_time  INTEGER NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('open', 'won', 'lost')),
    close_time   INTEGER,
    PRIMARY KEY (tenant_id, deal_id)
) WITHOUT ROWID;
CREATE INDEX deal_facts_create_time ON deal_facts (tenant_id, create_time);

CREATE TABLE deal_transitions (
    tenant_id  TEXT    NOT NULL,
    deal_id    TEXT    NOT NULL,
    sequence   INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('created', 'moved', 'won', 'lost', 'reopened')),
    from_stage TEXT,
    to_stage   TEXT,
    time       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, sequence)
) WITHOUT ROWID;
CREATE INDEX deal_transitions_closes ON deal_transitions (tenant_id, time)
    WHERE kind IN ('won', 'lost', 'reopened');

CREATE TABLE lead_facts (
    tenant_id    TEXT    NOT NULL,
    lead_id      TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    create_time  INTEGER NOT NULL,
    deal_id      TEXT,
    convert_time INTEGER,
    PRIMARY KEY (tenant_id, lead_id)
) WITHOUT ROWID;
CREATE INDEX lead_facts_create_time ON lead_facts (tenant_id, create_time);

CREATE TABLE forecast_facts (
    tenant_id    TEXT    NOT NULL,
    forecast_id  TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    period       TEXT    NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency     TEXT    NOT NULL,
    category     TEXT    NOT NULL,
    submit_time  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, forecast_id)
) WITHOUT ROWID;
CREATE INDEX forecast_facts_period ON forecast_facts (tenant_id, period);

CREATE TABLE quota_facts (
    tenant_id    TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    period       TEXT    NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency     TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, period, owner)
) WITHOUT ROWID;

CREATE TABLE goals (
    tenant_id   TEXT    NOT NULL,
    goal_id     TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, goal_id)
) WITHOUT ROWID;

CREATE TABLE ingest_skipped (
    tenant_id TEXT    NOT NULL,
    source    TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source, type)
) WITHOUT ROWID;

CREATE TABLE ingest_parked (
    tenant_id TEXT    NOT NULL,
    source    TEXT    NOT NULL,
    sequence  INTEGER NOT NULL,
    type      TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    park_time INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source, sequence)
) WITHOUT ROWID;

CREATE TABLE ingest_watermarks (
    source      TEXT    PRIMARY KEY,
    sequence    INTEGER NOT NULL,
    commit_time INTEGER NOT NULL
);

CREATE TABLE feed_checkpoints (
    consumer    TEXT    PRIMARY KEY,
    seq         INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);
