-- Analytics service schema: the facts kept of the other services' events (ids, amounts,
-- times and categories; never a name, an email or a phone number), what ingest skipped and
-- parked, and the checkpoint and watermark of each followed feed. Every tenant table carries
-- tenant_id and is guarded by row-level security (enabled and forced) against the tenant
-- pinned per transaction in crm.tenant_id; ingest, which writes every tenant's facts, pins
-- each event's tenant in turn.

DO $$
BEGIN
    CREATE ROLE crm_analytics_app NOLOGIN NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT crm_analytics_app TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;

-- A deal as its latest event left it.
CREATE TABLE deal_facts (
    tenant_id    text        NOT NULL,
    deal_id      uuid        NOT NULL,
    pipeline_id  uuid        NOT NULL,
    owner        text        NOT NULL,
    lead_id      uuid,
    amount_minor bigint      NOT NULL,
    currency     text        NOT NULL,
    create_time  timestamptz NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('open', 'won', 'lost')),
    close_time   timestamptz,
    PRIMARY KEY (tenant_id, deal_id)
);
CREATE INDEX deal_facts_create_time ON deal_facts (tenant_id, create_time);

-- Every entry of every deal's stage history, append-only.
CREATE TABLE deal_transitions (
    tenant_id  text        NOT NULL,
    deal_id    uuid        NOT NULL,
    sequence   bigint      NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('created', 'moved', 'won', 'lost', 'reopened')),
    from_stage uuid,
    to_stage   uuid,
    time       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, sequence)
);
-- The closes and reopenings of a period (win rate, cycle days).
CREATE INDEX deal_transitions_closes ON deal_transitions (tenant_id, time)
    WHERE kind IN ('won', 'lost', 'reopened');

-- A lead as its latest event left it.
CREATE TABLE lead_facts (
    tenant_id    text        NOT NULL,
    lead_id      uuid        NOT NULL,
    owner        text        NOT NULL,
    source       text        NOT NULL,
    create_time  timestamptz NOT NULL,
    deal_id      uuid,
    convert_time timestamptz,
    PRIMARY KEY (tenant_id, lead_id)
);
CREATE INDEX lead_facts_create_time ON lead_facts (tenant_id, create_time);

-- Every forecast submission (never changed once made).
CREATE TABLE forecast_facts (
    tenant_id    text        NOT NULL,
    forecast_id  uuid        NOT NULL,
    owner        text        NOT NULL,
    period       text        NOT NULL,
    amount_minor bigint      NOT NULL,
    currency     text        NOT NULL,
    category     text        NOT NULL,
    submit_time  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, forecast_id)
);
CREATE INDEX forecast_facts_period ON forecast_facts (tenant_id, period);

-- Each salesperson's quota per period, as last set.
CREATE TABLE quota_facts (
    tenant_id    text   NOT NULL,
    owner        text   NOT NULL,
    period       text   NOT NULL,
    amount_minor bigint NOT NULL,
    currency     text   NOT NULL,
    PRIMARY KEY (tenant_id, period, owner)
);

-- Goals, each with its baseline frozen when it was set (the document: domain::goals::Goal).
CREATE TABLE goals (
    tenant_id   text        NOT NULL,
    goal_id     uuid        NOT NULL,
    create_time timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, goal_id)
);

-- Events of a type ingest does not know, counted per tenant.
CREATE TABLE ingest_skipped (
    tenant_id text   NOT NULL,
    source    text   NOT NULL,
    type      text   NOT NULL,
    count     bigint NOT NULL,
    PRIMARY KEY (tenant_id, source, type)
);

-- Events ingest could not decode, kept with the reason (the feed went on past them).
CREATE TABLE ingest_parked (
    tenant_id text        NOT NULL,
    source    text        NOT NULL,
    sequence  bigint      NOT NULL,
    type      text        NOT NULL,
    reason    text        NOT NULL,
    park_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, source, sequence)
);

-- How far each followed feed has been applied (not tenant data: the producer's sequence).
CREATE TABLE ingest_watermarks (
    source      text        PRIMARY KEY,
    sequence    bigint      NOT NULL,
    commit_time timestamptz NOT NULL
);
GRANT SELECT, INSERT, UPDATE ON ingest_watermarks TO crm_analytics_app;

CREATE TABLE feed_checkpoints (
    consumer    text        PRIMARY KEY,
    seq         bigint      NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON feed_checkpoints TO crm_analytics_app;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['deal_facts', 'deal_transitions', 'lead_facts', 'forecast_facts', 'quota_facts', 'goals', 'ingest_skipped',
                             'ingest_parked'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = current_setting('crm.tenant_id', true))
            WITH CHECK (tenant_id = current_setting('crm.tenant_id', true))$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO crm_analytics_app', t);
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA public TO crm_analytics_app;
