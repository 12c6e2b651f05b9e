-- The closes of deals, kept ready for the metrics that read them (win rate, cycle days,
-- pipeline velocity, forecast accuracy, quota attainment), so that a period's figures are
-- read from a few thousand rows instead of joining its transitions to their deals.
--
-- deal_closes: each close of each deal (a transition to a won or lost stage) with the deal as
-- it stands now, its cycle in milliseconds, and when the deal's next close or reopening
-- superseded it (NULL: it is the deal's last).
-- close_cells: the closes nothing superseded, added up per UTC day of the close and every
-- attribute a metric groups or splits by. Sums are kept as a whole part and a rest (10^9
-- minor units, days of 86400000 ms) so that no sum can overflow whatever the amounts.
-- Ingest keeps both in its transaction with analytics_refresh_closes.

CREATE TABLE deal_closes (
    tenant_id       text        NOT NULL,
    deal_id         uuid        NOT NULL,
    sequence        bigint      NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('won', 'lost')),
    close_time      timestamptz NOT NULL,
    superseded_time timestamptz,
    owner           text        NOT NULL,
    pipeline_id     uuid        NOT NULL,
    lead_source     text        NOT NULL,
    amount_minor    bigint      NOT NULL,
    currency        text        NOT NULL,
    create_time     timestamptz NOT NULL,
    cycle_ms        bigint      NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, sequence)
);
-- A period's won closes with what cycle days read of them, so the median reads the index
-- alone. Partial: only queries that say `outcome = 'won'` (a period's) can use it, so a lookup
-- of a deal's closes by its key never scans a tenant's closes through it, whatever the
-- statistics say (during a catch-up into empty tables they say every tenant has one row).
CREATE INDEX deal_closes_won ON deal_closes (tenant_id, close_time)
    INCLUDE (superseded_time, cycle_ms, owner, pipeline_id, lead_source) WHERE outcome = 'won';
-- The few closes a later reopening superseded (the cells hold the rest).
CREATE INDEX deal_closes_superseded ON deal_closes (tenant_id, close_time) WHERE superseded_time IS NOT NULL;

CREATE TABLE close_cells (
    tenant_id     text   NOT NULL,
    close_day     date   NOT NULL,
    owner         text   NOT NULL,
    pipeline_id   uuid   NOT NULL,
    lead_source   text   NOT NULL,
    outcome       text   NOT NULL,
    currency      text   NOT NULL,
    deals         bigint NOT NULL,
    amount_giga   bigint NOT NULL,
    amount_rest   bigint NOT NULL,
    cycle_days    bigint NOT NULL,
    cycle_rest_ms bigint NOT NULL,
    PRIMARY KEY (tenant_id, close_day, owner, pipeline_id, lead_source, outcome, currency)
);

-- The deals of a lead whose source changed.
CREATE INDEX deal_facts_lead ON deal_facts (tenant_id, lead_id) WHERE lead_id IS NOT NULL;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['deal_closes', 'close_cells'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = current_setting('crm.tenant_id', true))
            WITH CHECK (tenant_id = current_setting('crm.tenant_id', true))$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO crm_analytics_app', t);
    END LOOP;
END
$$;

-- The closes and cells of the pinned tenant's deals `p_deals`, and of the deals of its leads
-- `p_leads` (a lead's source is part of a close), computed again from the facts: their old
-- closes are taken out of the cells and deleted, their closes now are inserted and added in.
-- Every row is reached through its key from the ids (lateral subqueries the planner cannot
-- flatten): PL/pgSQL keeps one plan per session, and a plan made while the tables were small
-- (a catch-up into an empty database) must not scan a tenant's rows later.
CREATE FUNCTION analytics_refresh_closes(p_deals uuid[], p_leads uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tenant text := current_setting('crm.tenant_id', true);
    affected uuid[] := p_deals;
BEGIN
    IF cardinality(p_leads) > 0 THEN
        affected := ARRAY(SELECT DISTINCT x FROM unnest(affected || ARRAY(
            SELECT d.deal_id FROM unnest(p_leads) AS a(id)
            CROSS JOIN LATERAL (SELECT deal_id FROM deal_facts WHERE tenant_id = tenant AND lead_id = a.id OFFSET 0) d)) x);
    END IF;
    IF cardinality(affected) = 0 THEN
        RETURN;
    END IF;
    WITH old AS (
        DELETE FROM deal_closes WHERE ctid = ANY(ARRAY(
            SELECT k.ctid FROM unnest(affected) AS a(id)
            CROSS JOIN LATERAL (SELECT ctid FROM deal_closes WHERE tenant_id = tenant AND deal_id = a.id OFFSET 0) k))
        RETURNING *
    )
    INSERT INTO close_cells AS c (tenant_id, close_day, owner, pipeline_id, lead_source, outcome, currency,
                                  deals, amount_giga, amount_rest, cycle_days, cycle_rest_ms)
    SELECT tenant_id, (close_time AT TIME ZONE 'UTC')::date, owner, pipeline_id, lead_source, outcome, currency,
           -count(*), -sum(amount_minor / 1000000000), -sum(amount_minor % 1000000000),
           -sum(cycle_ms / 86400000), -sum(cycle_ms % 86400000)
    FROM old WHERE superseded_time IS NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (tenant_id, close_day, owner, pipeline_id, lead_source, outcome, currency) DO UPDATE SET
        deals = c.deals + excluded.deals, amount_giga = c.amount_giga + excluded.amount_giga,
        amount_rest = c.amount_rest + excluded.amount_rest, cycle_days = c.cycle_days + excluded.cycle_days,
        cycle_rest_ms = c.cycle_rest_ms + excluded.cycle_rest_ms;
    WITH new AS (
        INSERT INTO deal_closes (tenant_id, deal_id, sequence, outcome, close_time, superseded_time, owner,
                                 pipeline_id, lead_source, amount_minor, currency, create_time, cycle_ms)
        SELECT tenant, d.deal_id, t.sequence, t.kind, t.time, t.next_time, d.owner, d.pipeline_id,
               coalesce(l.source, ''), d.amount_minor, d.currency, d.create_time,
               trunc(extract(epoch FROM t.time - d.create_time) * 1000)::bigint
        FROM unnest(affected) AS a(id)
        CROSS JOIN LATERAL (SELECT * FROM deal_facts WHERE tenant_id = tenant AND deal_id = a.id OFFSET 0) d
        CROSS JOIN LATERAL (
            SELECT x.sequence, x.kind, x.time, lead(x.time) OVER (ORDER BY x.sequence) AS next_time
            FROM (SELECT * FROM deal_transitions WHERE tenant_id = tenant AND deal_id = a.id OFFSET 0) x
            WHERE x.kind IN ('won', 'lost', 'reopened')) t
        LEFT JOIN LATERAL (SELECT source FROM lead_facts WHERE tenant_id = tenant AND lead_id = d.lead_id OFFSET 0) l
            ON true
        WHERE t.kind IN ('won', 'lost')
        RETURNING *
    )
    INSERT INTO close_cells AS c (tenant_id, close_day, owner, pipeline_id, lead_source, outcome, currency,
                                  deals, amount_giga, amount_rest, cycle_days, cycle_rest_ms)
    SELECT tenant_id, (close_time AT TIME ZONE 'UTC')::date, owner, pipeline_id, lead_source, outcome, currency,
           count(*), sum(amount_minor / 1000000000), sum(amount_minor % 1000000000),
           sum(cycle_ms / 86400000), sum(cycle_ms % 86400000)
    FROM new WHERE superseded_time IS NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (tenant_id, close_day, owner, pipeline_id, lead_source, outcome, currency) DO UPDATE SET
        deals = c.deals + excluded.deals, amount_giga = c.amount_giga + excluded.amount_giga,
        amount_rest = c.amount_rest + excluded.amount_rest, cycle_days = c.cycle_days + excluded.cycle_days,
        cycle_rest_ms = c.cycle_rest_ms + excluded.cycle_rest_ms;
END
$$;

-- The closes of the facts already kept, tenant by tenant (row-level security applies to the
-- owner of the tables too).
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT tenant_id FROM analytics_tenants LOOP
        PERFORM set_config('crm.tenant_id', t, true);
        PERFORM analytics_refresh_closes(ARRAY(SELECT deal_id FROM deal_facts WHERE tenant_id = t), '{}');
    END LOOP;
    PERFORM set_config('crm.tenant_id', '', true);
END
$$;
