-- As migrations/postgres/0002_stages_and_versions.sql: stage order, deal versions, and the
-- pipeline feed applied again from its start to fill them.

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

CREATE INDEX deal_transitions_entries ON deal_transitions (tenant_id, time)
    WHERE kind IN ('created', 'moved', 'reopened');

DELETE FROM ingest_skipped;
DELETE FROM ingest_parked;
DELETE FROM feed_checkpoints WHERE consumer = 'analytics<-pipeline';
DELETE FROM ingest_watermarks WHERE source = 'crm.pipeline.v1';
