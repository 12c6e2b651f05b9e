-- The tenants ingest has seen (the deriver's round goes through them): no row-level security,
-- it is the list a round starts from and holds nothing but the ids.
CREATE TABLE analytics_tenants (
    tenant_id text PRIMARY KEY
);
INSERT INTO analytics_tenants (tenant_id) SELECT DISTINCT tenant_id FROM deal_facts ON CONFLICT DO NOTHING;
INSERT INTO analytics_tenants (tenant_id) SELECT DISTINCT tenant_id FROM customer_facts ON CONFLICT DO NOTHING;
GRANT SELECT, INSERT ON analytics_tenants TO crm_analytics_app;

-- What the service last published of each derived state, so each change is published once.
CREATE TABLE customer_segments (
    tenant_id   text NOT NULL,
    customer_id uuid NOT NULL,
    segment     text NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

CREATE TABLE goal_statuses (
    tenant_id text NOT NULL,
    goal_id   uuid NOT NULL,
    status    text NOT NULL,
    PRIMARY KEY (tenant_id, goal_id)
);

-- Open deals published as stalled (a row per quiet spell; activity removes it).
CREATE TABLE stalled_deals (
    tenant_id     text        NOT NULL,
    deal_id       uuid        NOT NULL,
    last_activity timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, deal_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customer_segments', 'goal_statuses', 'stalled_deals'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = current_setting('crm.tenant_id', true))
            WITH CHECK (tenant_id = current_setting('crm.tenant_id', true))$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO crm_analytics_app', t);
    END LOOP;
END
$$;

-- A deal's customer's last interaction, for stalled deals.
CREATE INDEX interaction_facts_contact ON interaction_facts (tenant_id, contact_id, time);
CREATE INDEX interaction_facts_company ON interaction_facts (tenant_id, company_id, time) WHERE company_id IS NOT NULL;
CREATE INDEX deal_facts_open ON deal_facts (tenant_id, outcome);
