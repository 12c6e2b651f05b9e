-- The stays of deals in stages, kept ready for the stage funnel: as
-- migrations/postgres/0005_stays.sql (times in microseconds since the epoch, ids as text, a
-- month as its first day YYYY-MM-01, the nil id and '' for what an event did not say).
-- Ingest keeps all four tables in its transaction (store/sqlite.rs, refresh_stays); the end of
-- this file fills them from the facts already kept.

CREATE TABLE deal_stays (
    tenant_id   TEXT    NOT NULL,
    deal_id     TEXT    NOT NULL,
    sequence    INTEGER NOT NULL,
    entry_time  INTEGER NOT NULL,
    pipeline_id TEXT    NOT NULL,
    stage_id    TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    end_kind    TEXT    NOT NULL,
    end_stage   TEXT    NOT NULL,
    end_time    INTEGER,
    bucket      INTEGER,
    PRIMARY KEY (tenant_id, deal_id, sequence)
) WITHOUT ROWID;
CREATE INDEX deal_stays_entry ON deal_stays (tenant_id, entry_time);

CREATE TABLE stay_ends (
    tenant_id   TEXT    NOT NULL,
    month       TEXT    NOT NULL,
    pipeline_id TEXT    NOT NULL,
    stage_id    TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    end_kind    TEXT    NOT NULL,
    end_stage   TEXT    NOT NULL,
    stays       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, month, pipeline_id, stage_id, owner, end_kind, end_stage)
) WITHOUT ROWID;

CREATE TABLE stay_times (
    tenant_id   TEXT    NOT NULL,
    month       TEXT    NOT NULL,
    pipeline_id TEXT    NOT NULL,
    stage_id    TEXT    NOT NULL,
    bucket      INTEGER NOT NULL,
    stays       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, month, pipeline_id, stage_id, bucket)
) WITHOUT ROWID;

CREATE TABLE owner_stay_times (
    tenant_id TEXT    NOT NULL,
    month     TEXT    NOT NULL,
    owner     TEXT    NOT NULL,
    bucket    INTEGER NOT NULL,
    stays     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, month, owner, bucket)
) WITHOUT ROWID;

-- The stays of the facts already kept.
INSERT INTO deal_stays (tenant_id, deal_id, sequence, entry_time, pipeline_id, stage_id, owner, end_kind, end_stage,
                        end_time, bucket)
SELECT t.tenant_id, t.deal_id, t.sequence, t.time, d.pipeline_id, coalesce(t.to_stage, '00000000-0000-0000-0000-000000000000'), d.owner,
       coalesce(t.end_kind, ''), coalesce(t.end_stage, '00000000-0000-0000-0000-000000000000'), t.end_time,
       CASE WHEN t.end_time IS NOT NULL THEN (SELECT CASE WHEN s < 64 THEN s ELSE (e - 5) * 32 + (s >> (e - 5)) END
             FROM (SELECT s, (SELECT count(*) FROM json_each('[32,64,128,256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576,2097152,4194304,8388608,16777216,33554432,67108864,134217728,268435456,536870912,1073741824,2147483648,4294967296,8589934592,17179869184,34359738368,68719476736,137438953472,274877906944,549755813888,1099511627776,2199023255552,4398046511104,8796093022208,17592186044416,35184372088832,70368744177664,140737488355328,281474976710656,562949953421312,1125899906842624,2251799813685248,4503599627370496,9007199254740992]') WHERE value <= s) + 4 AS e
                   FROM (SELECT max(t.end_time - t.time, 0) / 1000000 AS s))) END
FROM (SELECT tenant_id, deal_id, sequence, kind, to_stage, time, lead(kind) OVER w AS end_kind,
             lead(to_stage) OVER w AS end_stage, lead(time) OVER w AS end_time
      FROM deal_transitions WINDOW w AS (PARTITION BY tenant_id, deal_id ORDER BY sequence)) t
JOIN deal_facts d ON d.tenant_id = t.tenant_id AND d.deal_id = t.deal_id
WHERE t.kind IN ('created', 'moved', 'reopened');

INSERT INTO stay_ends (tenant_id, month, pipeline_id, stage_id, owner, end_kind, end_stage, stays)
SELECT tenant_id, date(entry_time / 1000000.0, 'unixepoch', 'start of month'), pipeline_id, stage_id, owner, end_kind,
       end_stage, count(*)
FROM deal_stays GROUP BY 1, 2, 3, 4, 5, 6, 7;

INSERT INTO stay_times (tenant_id, month, pipeline_id, stage_id, bucket, stays)
SELECT tenant_id, date(entry_time / 1000000.0, 'unixepoch', 'start of month'), pipeline_id, stage_id, bucket, count(*)
FROM deal_stays WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4, 5;

INSERT INTO owner_stay_times (tenant_id, month, owner, bucket, stays)
SELECT tenant_id, date(entry_time / 1000000.0, 'unixepoch', 'start of month'), owner, bucket, count(*)
FROM deal_stays WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4;
