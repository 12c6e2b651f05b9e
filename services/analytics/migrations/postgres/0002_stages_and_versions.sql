-- The facts the stage funnel and the pipeline as of a past date need: each pipeline's stage
-- order, each deal's owner and amount over time, and every deal's first entry of history (its
-- creation into its first stage, which ingest now derives from the creating event).
--
-- The pipeline feed is applied again from its start to fill them: ingest is idempotent (facts
-- are upserted or kept once), so only the counters of skipped and parked events, which a
-- replay would count twice, start over. TRUNCATE is not subject to row-level security.

-- A pipeline's stages in board order (ids, order and kind; never a name).
CREATE TABLE stage_facts (
    tenant_id   text    NOT NULL,
    pipeline_id uuid    NOT NULL,
    stage_id    uuid    NOT NULL,
    position    integer NOT NULL,
    kind        text    NOT NULL CHECK (kind IN ('open', 'won', 'lost')),
    PRIMARY KEY (tenant_id, pipeline_id, stage_id)
);

-- A deal's owner and amount as each of its events left them, by the deal's update time.
CREATE TABLE deal_versions (
    tenant_id    text        NOT NULL,
    deal_id      uuid        NOT NULL,
    version_time timestamptz NOT NULL,
    owner        text        NOT NULL,
    amount_minor bigint      NOT NULL,
    currency     text        NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, version_time)
);

-- The entries into a stage of a period (the stage funnel).
CREATE INDEX deal_transitions_entries ON deal_transitions (tenant_id, time)
    WHERE kind IN ('created', 'moved', 'reopened');

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['stage_facts', 'deal_versions'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = current_setting('crm.tenant_id', true))
            WITH CHECK (tenant_id = current_setting('crm.tenant_id', true))$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO crm_analytics_app', t);
    END LOOP;
END
$$;

TRUNCATE ingest_skipped, ingest_parked;
DELETE FROM feed_checkpoints WHERE consumer = 'analytics<-pipeline';
DELETE FROM ingest_watermarks WHERE source = 'crm.pipeline.v1';
