-- The cycles of the won closes counted per bucket of their durations (see
-- analytics_duration_bucket in the stays migration), so that cycle days' median is read from a
-- few hundred counts instead of sorting a period's cycles on every query.
--
-- cycle_times: the won closes nothing superseded (those close_cells adds up), counted per UTC
-- month of the close, owner, pipeline, lead source and bucket of the cycle. A window's whole
-- months are read from it, its other days and the closes superseded after it from deal_closes.
-- Ingest keeps it in analytics_refresh_closes, replaced here to do so.

CREATE TABLE cycle_times (
    tenant_id   text    NOT NULL,
    month       date    NOT NULL,
    owner       text    NOT NULL,
    pipeline_id uuid    NOT NULL,
    lead_source text    NOT NULL,
    bucket      integer NOT NULL,
    deals       bigint  NOT NULL,
    PRIMARY KEY (tenant_id, month, owner, pipeline_id, lead_source, bucket)
);
ALTER TABLE cycle_times ENABLE ROW LEVEL SECURITY;
ALTER TABLE cycle_times FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON cycle_times
    USING (tenant_id = current_setting('crm.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON cycle_times TO crm_analytics_app;

-- As in the closes migration, and the won closes' cycles counted in cycle_times alongside
-- close_cells.
CREATE OR REPLACE FUNCTION analytics_refresh_closes(p_deals uuid[], p_leads uuid[]) RETURNS void
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
    ), times AS (
        INSERT INTO cycle_times AS c (tenant_id, month, owner, pipeline_id, lead_source, bucket, deals)
        SELECT tenant_id, date_trunc('month', close_time AT TIME ZONE 'UTC')::date, owner, pipeline_id, lead_source,
               analytics_duration_bucket(cycle_ms), -count(*)
        FROM old WHERE superseded_time IS NULL AND outcome = 'won'
        GROUP BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (tenant_id, month, owner, pipeline_id, lead_source, bucket) DO UPDATE SET
            deals = c.deals + excluded.deals
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
    ), times AS (
        INSERT INTO cycle_times AS c (tenant_id, month, owner, pipeline_id, lead_source, bucket, deals)
        SELECT tenant_id, date_trunc('month', close_time AT TIME ZONE 'UTC')::date, owner, pipeline_id, lead_source,
               analytics_duration_bucket(cycle_ms), count(*)
        FROM new WHERE superseded_time IS NULL AND outcome = 'won'
        GROUP BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (tenant_id, month, owner, pipeline_id, lead_source, bucket) DO UPDATE SET
            deals = c.deals + excluded.deals
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

-- The cycle times of the closes already kept, tenant by tenant (row-level security applies to
-- the owner of the tables too).
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT tenant_id FROM analytics_tenants LOOP
        PERFORM set_config('crm.tenant_id', t, true);
        INSERT INTO cycle_times (tenant_id, month, owner, pipeline_id, lead_source, bucket, deals)
        SELECT tenant_id, date_trunc('month', close_time AT TIME ZONE 'UTC')::date, owner, pipeline_id, lead_source,
               analytics_duration_bucket(cycle_ms), count(*)
        FROM deal_closes WHERE tenant_id = t AND superseded_time IS NULL AND outcome = 'won'
        GROUP BY 1, 2, 3, 4, 5, 6;
    END LOOP;
    PERFORM set_config('crm.tenant_id', '', true);
END
$$;
