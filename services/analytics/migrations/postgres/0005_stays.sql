-- The stays of deals in stages, kept ready for the stage funnel, so that a period's funnel is
-- read from a few thousand counts instead of joining each of its stays to the transition that
-- ended it.
--
-- deal_stays: each stay of each deal in a stage (its entry: a creation, move or reopening into
-- the stage) with the deal as it stands now (pipeline, owner), what ended it (the deal's next
-- transition: its kind, the stage it led to, when; NULL while it lasts), and the bucket of its
-- duration (analytics_duration_bucket).
-- stay_ends: the stays added up per UTC month of entry, stage, owner and end.
-- stay_times: the ended stays added up per UTC month of entry, stage and duration bucket;
-- owner_stay_times the same per owner instead of stage (the funnel by owner).
-- A window's whole months are read from the sums, its other days from the stays themselves.
-- Ingest keeps all four in its transaction with analytics_refresh_stays.

-- The bucket of a duration of ms milliseconds, from its whole seconds s (negative: 0): s itself
-- under 64 s, then 32 buckets per doubling, each 1/32 of its lower end wide (s >> (e - 5) for
-- 2^e <= s < 2^(e+1), e being 4 + the number of powers of two from 32 up to s); none for none.
-- A median read from the buckets is within 1/64 of the exact one. One expression, so that the
-- planner inlines it (a function with a FROM clause would run as a query of its own per row).
-- Mirrored in the service (domain::durations) and the SQLite store.
CREATE FUNCTION analytics_duration_bucket(ms bigint) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE WHEN ms < 64000 THEN greatest(ms, 0) / 1000
                 ELSE (width_bucket(ms / 1000, '{32,64,128,256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576,2097152,4194304,8388608,16777216,33554432,67108864,134217728,268435456,536870912,1073741824,2147483648,4294967296,8589934592,17179869184,34359738368,68719476736,137438953472,274877906944,549755813888,1099511627776,2199023255552,4398046511104,8796093022208,17592186044416,35184372088832,70368744177664,140737488355328,281474976710656,562949953421312,1125899906842624,2251799813685248,4503599627370496,9007199254740992}'::bigint[]) - 1) * 32
                      + ((ms / 1000) >> (width_bucket(ms / 1000, '{32,64,128,256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576,2097152,4194304,8388608,16777216,33554432,67108864,134217728,268435456,536870912,1073741824,2147483648,4294967296,8589934592,17179869184,34359738368,68719476736,137438953472,274877906944,549755813888,1099511627776,2199023255552,4398046511104,8796093022208,17592186044416,35184372088832,70368744177664,140737488355328,281474976710656,562949953421312,1125899906842624,2251799813685248,4503599627370496,9007199254740992}'::bigint[]) - 1)::integer) END)::integer
$$;

CREATE TABLE deal_stays (
    tenant_id   text        NOT NULL,
    deal_id     uuid        NOT NULL,
    sequence    bigint      NOT NULL,
    entry_time  timestamptz NOT NULL,
    pipeline_id uuid        NOT NULL,
    -- The nil id when the event did not say.
    stage_id    uuid        NOT NULL,
    owner       text        NOT NULL,
    -- '' while the stay lasts.
    end_kind    text        NOT NULL,
    -- The nil id when the stay lasts or its end did not say.
    end_stage   uuid        NOT NULL,
    end_time    timestamptz,
    bucket      integer,
    PRIMARY KEY (tenant_id, deal_id, sequence)
);
-- A window's days outside its whole months.
CREATE INDEX deal_stays_entry ON deal_stays (tenant_id, entry_time)
    INCLUDE (pipeline_id, stage_id, owner, end_kind, end_stage, bucket);

CREATE TABLE stay_ends (
    tenant_id   text   NOT NULL,
    month       date   NOT NULL,
    pipeline_id uuid   NOT NULL,
    stage_id    uuid   NOT NULL,
    owner       text   NOT NULL,
    end_kind    text   NOT NULL,
    end_stage   uuid   NOT NULL,
    stays       bigint NOT NULL,
    PRIMARY KEY (tenant_id, month, pipeline_id, stage_id, owner, end_kind, end_stage)
);

CREATE TABLE stay_times (
    tenant_id   text    NOT NULL,
    month       date    NOT NULL,
    pipeline_id uuid    NOT NULL,
    stage_id    uuid    NOT NULL,
    bucket      integer NOT NULL,
    stays       bigint  NOT NULL,
    PRIMARY KEY (tenant_id, month, pipeline_id, stage_id, bucket)
);

CREATE TABLE owner_stay_times (
    tenant_id text    NOT NULL,
    month     date    NOT NULL,
    owner     text    NOT NULL,
    bucket    integer NOT NULL,
    stays     bigint  NOT NULL,
    PRIMARY KEY (tenant_id, month, owner, bucket)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['deal_stays', 'stay_ends', 'stay_times', 'owner_stay_times'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = current_setting('crm.tenant_id', true))
            WITH CHECK (tenant_id = current_setting('crm.tenant_id', true))$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO crm_analytics_app', t);
    END LOOP;
END
$$;

-- The stays of the pinned tenant's deals `p_deals` computed again from the facts (as
-- analytics_refresh_closes does for closes, and for the same reasons every row is reached
-- through its key): their old stays are taken out of the sums and deleted, their stays now
-- inserted and added in.
CREATE FUNCTION analytics_refresh_stays(p_deals uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tenant text := current_setting('crm.tenant_id', true);
BEGIN
    IF cardinality(p_deals) = 0 THEN
        RETURN;
    END IF;
    WITH old AS (
        DELETE FROM deal_stays WHERE ctid = ANY(ARRAY(
            SELECT k.ctid FROM unnest(p_deals) AS a(id)
            CROSS JOIN LATERAL (SELECT ctid FROM deal_stays WHERE tenant_id = tenant AND deal_id = a.id OFFSET 0) k))
        RETURNING *
    ), ends AS (
        INSERT INTO stay_ends AS c (tenant_id, month, pipeline_id, stage_id, owner, end_kind, end_stage, stays)
        SELECT tenant_id, date_trunc('month', entry_time AT TIME ZONE 'UTC')::date, pipeline_id, stage_id, owner,
               end_kind, end_stage, -count(*)
        FROM old GROUP BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (tenant_id, month, pipeline_id, stage_id, owner, end_kind, end_stage) DO UPDATE SET
            stays = c.stays + excluded.stays
    ), times AS (
        INSERT INTO stay_times AS c (tenant_id, month, pipeline_id, stage_id, bucket, stays)
        SELECT tenant_id, date_trunc('month', entry_time AT TIME ZONE 'UTC')::date, pipeline_id, stage_id, bucket,
               -count(*)
        FROM old WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, month, pipeline_id, stage_id, bucket) DO UPDATE SET stays = c.stays + excluded.stays
    )
    INSERT INTO owner_stay_times AS c (tenant_id, month, owner, bucket, stays)
    SELECT tenant_id, date_trunc('month', entry_time AT TIME ZONE 'UTC')::date, owner, bucket, -count(*)
    FROM old WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4
    ON CONFLICT (tenant_id, month, owner, bucket) DO UPDATE SET stays = c.stays + excluded.stays;
    WITH new AS (
        INSERT INTO deal_stays (tenant_id, deal_id, sequence, entry_time, pipeline_id, stage_id, owner, end_kind,
                                end_stage, end_time, bucket)
        SELECT tenant, d.deal_id, t.sequence, t.time, d.pipeline_id,
               coalesce(t.to_stage, '00000000-0000-0000-0000-000000000000'), d.owner, coalesce(t.end_kind, ''),
               coalesce(t.end_stage, '00000000-0000-0000-0000-000000000000'), t.end_time,
               analytics_duration_bucket(trunc(extract(epoch FROM t.end_time - t.time) * 1000)::bigint)
        FROM unnest(p_deals) AS a(id)
        CROSS JOIN LATERAL (SELECT * FROM deal_facts WHERE tenant_id = tenant AND deal_id = a.id OFFSET 0) d
        CROSS JOIN LATERAL (
            SELECT x.sequence, x.kind, x.to_stage, x.time, lead(x.kind) OVER w AS end_kind,
                   lead(x.to_stage) OVER w AS end_stage, lead(x.time) OVER w AS end_time
            FROM (SELECT * FROM deal_transitions WHERE tenant_id = tenant AND deal_id = a.id OFFSET 0) x
            WINDOW w AS (ORDER BY x.sequence)) t
        WHERE t.kind IN ('created', 'moved', 'reopened')
        RETURNING *
    ), ends AS (
        INSERT INTO stay_ends AS c (tenant_id, month, pipeline_id, stage_id, owner, end_kind, end_stage, stays)
        SELECT tenant_id, date_trunc('month', entry_time AT TIME ZONE 'UTC')::date, pipeline_id, stage_id, owner,
               end_kind, end_stage, count(*)
        FROM new GROUP BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (tenant_id, month, pipeline_id, stage_id, owner, end_kind, end_stage) DO UPDATE SET
            stays = c.stays + excluded.stays
    ), times AS (
        INSERT INTO stay_times AS c (tenant_id, month, pipeline_id, stage_id, bucket, stays)
        SELECT tenant_id, date_trunc('month', entry_time AT TIME ZONE 'UTC')::date, pipeline_id, stage_id, bucket,
               count(*)
        FROM new WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, month, pipeline_id, stage_id, bucket) DO UPDATE SET stays = c.stays + excluded.stays
    )
    INSERT INTO owner_stay_times AS c (tenant_id, month, owner, bucket, stays)
    SELECT tenant_id, date_trunc('month', entry_time AT TIME ZONE 'UTC')::date, owner, bucket, count(*)
    FROM new WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4
    ON CONFLICT (tenant_id, month, owner, bucket) DO UPDATE SET stays = c.stays + excluded.stays;
END
$$;

-- The stays of the facts already kept, tenant by tenant (row-level security applies to the
-- owner of the tables too).
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT tenant_id FROM analytics_tenants LOOP
        PERFORM set_config('crm.tenant_id', t, true);
        PERFORM analytics_refresh_stays(ARRAY(SELECT deal_id FROM deal_facts WHERE tenant_id = t));
    END LOOP;
    PERFORM set_config('crm.tenant_id', '', true);
END
$$;
