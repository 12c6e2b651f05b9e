-- The cycles of the won closes counted per bucket of their durations: as
-- migrations/postgres/0006_cycle_times.sql (a month as its first day YYYY-MM-01). Ingest keeps
-- it with close_cells (store/sqlite.rs, refresh_closes); the end of this file fills it from the
-- closes already kept.

CREATE TABLE cycle_times (
    tenant_id   TEXT    NOT NULL,
    month       TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    pipeline_id TEXT    NOT NULL,
    lead_source TEXT    NOT NULL,
    bucket      INTEGER NOT NULL,
    deals       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, month, owner, pipeline_id, lead_source, bucket)
) WITHOUT ROWID;

INSERT INTO cycle_times (tenant_id, month, owner, pipeline_id, lead_source, bucket, deals)
SELECT tenant_id, date(close_time / 1000000.0, 'unixepoch', 'start of month'), owner, pipeline_id, lead_source,
       (SELECT CASE WHEN s < 64 THEN s ELSE (e - 5) * 32 + (s >> (e - 5)) END
        FROM (SELECT s, (SELECT count(*) FROM json_each('[32,64,128,256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576,2097152,4194304,8388608,16777216,33554432,67108864,134217728,268435456,536870912,1073741824,2147483648,4294967296,8589934592,17179869184,34359738368,68719476736,137438953472,274877906944,549755813888,1099511627776,2199023255552,4398046511104,8796093022208,17592186044416,35184372088832,70368744177664,140737488355328,281474976710656,562949953421312,1125899906842624,2251799813685248,4503599627370496,9007199254740992]') WHERE value <= s) + 4 AS e
              FROM (SELECT max(cycle_ms, 0) / 1000 AS s))),
       count(*)
FROM deal_closes WHERE superseded_time IS NULL AND outcome = 'won'
GROUP BY 1, 2, 3, 4, 5, 6;
