-- The closes of deals, kept ready for the metrics that read them: as
-- migrations/postgres/0004_closes.sql (times in microseconds since the epoch, ids as text, a
-- close's day as YYYY-MM-DD). Ingest keeps both tables in its transaction (store/sqlite.rs,
-- refresh_closes).

CREATE TABLE deal_closes (
    tenant_id       TEXT    NOT NULL,
    deal_id         TEXT    NOT NULL,
    sequence        INTEGER NOT NULL,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('won', 'lost')),
    close_time      INTEGER NOT NULL,
    superseded_time INTEGER,
    owner           TEXT    NOT NULL,
    pipeline_id     TEXT    NOT NULL,
    lead_source     TEXT    NOT NULL,
    amount_minor    INTEGER NOT NULL,
    currency        TEXT    NOT NULL,
    create_time     INTEGER NOT NULL,
    cycle_ms        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, sequence)
) WITHOUT ROWID;
CREATE INDEX deal_closes_won ON deal_closes (tenant_id, close_time) WHERE outcome = 'won';
CREATE INDEX deal_closes_superseded ON deal_closes (tenant_id, close_time) WHERE superseded_time IS NOT NULL;

CREATE TABLE close_cells (
    tenant_id     TEXT    NOT NULL,
    close_day     TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    pipeline_id   TEXT    NOT NULL,
    lead_source   TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    currency      TEXT    NOT NULL,
    deals         INTEGER NOT NULL,
    amount_giga   INTEGER NOT NULL,
    amount_rest   INTEGER NOT NULL,
    cycle_days    INTEGER NOT NULL,
    cycle_rest_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, close_day, owner, pipeline_id, lead_source, outcome, currency)
) WITHOUT ROWID;

CREATE INDEX deal_facts_lead ON deal_facts (tenant_id, lead_id) WHERE lead_id IS NOT NULL;

-- The closes of the facts already kept.
INSERT INTO deal_closes (tenant_id, deal_id, sequence, outcome, close_time, superseded_time, owner, pipeline_id,
                         lead_source, amount_minor, currency, create_time, cycle_ms)
SELECT t.tenant_id, t.deal_id, t.sequence, t.kind, t.time, t.next_time, d.owner, d.pipeline_id,
       coalesce(l.source, ''), d.amount_minor, d.currency, d.create_time, (t.time - d.create_time) / 1000
FROM (SELECT tenant_id, deal_id, sequence, kind, time,
             lead(time) OVER (PARTITION BY tenant_id, deal_id ORDER BY sequence) AS next_time
      FROM deal_transitions WHERE kind IN ('won', 'lost', 'reopened')) t
JOIN deal_facts d ON d.tenant_id = t.tenant_id AND d.deal_id = t.deal_id
LEFT JOIN lead_facts l ON l.tenant_id = d.tenant_id AND l.lead_id = d.lead_id
WHERE t.kind IN ('won', 'lost');

INSERT INTO close_cells (tenant_id, close_day, owner, pipeline_id, lead_source, outcome, currency, deals,
                         amount_giga, amount_rest, cycle_days, cycle_rest_ms)
SELECT tenant_id, date(close_time / 1000000.0, 'unixepoch'), owner, pipeline_id, lead_source, outcome, currency,
       count(*), sum(amount_minor / 1000000000), sum(amount_minor % 1000000000), sum(cycle_ms / 86400000),
       sum(cycle_ms % 86400000)
FROM deal_closes WHERE superseded_time IS NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7;
