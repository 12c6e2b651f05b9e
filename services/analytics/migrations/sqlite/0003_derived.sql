-- The tenants ingest has seen (the deriver's round goes through them).
CREATE TABLE analytics_tenants (
    tenant_id TEXT PRIMARY KEY
) WITHOUT ROWID;
INSERT OR IGNORE INTO analytics_tenants (tenant_id) SELECT DISTINCT tenant_id FROM deal_facts;
INSERT OR IGNORE INTO analytics_tenants (tenant_id) SELECT DISTINCT tenant_id FROM customer_facts;

-- What the service last published of each derived state, so each change is published once.
CREATE TABLE customer_segments (
    tenant_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    segment     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
) WITHOUT ROWID;

CREATE TABLE goal_statuses (
    tenant_id TEXT NOT NULL,
    goal_id   TEXT NOT NULL,
    status    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, goal_id)
) WITHOUT ROWID;

-- Open deals published as stalled (a row per quiet spell; activity removes it).
CREATE TABLE stalled_deals (
    tenant_id     TEXT    NOT NULL,
    deal_id       TEXT    NOT NULL,
    last_activity INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, deal_id)
) WITHOUT ROWID;

-- A deal's customer's last interaction, for stalled deals.
CREATE INDEX interaction_facts_contact ON interaction_facts (tenant_id, contact_id, time);
CREATE INDEX interaction_facts_company ON interaction_facts (tenant_id, company_id, time) WHERE company_id IS NOT NULL;
CREATE INDEX deal_facts_open ON deal_facts (tenant_id, outcome);
