-- The facts the stage funnel and the pipeline as of a past date need: each pipeline's stage
-- order, each deal's owner and amount over time, and every deal's first entry of history (its
-- creation into its first stage, which ingest now derives from the creating event); each
-- deal's customer; and the facts of the contact service's feed: contacts and companies (only
-- categories and which profile fields are filled, never a name, an email or a phone number),
-- their owners over time, lifecycle moves, interactions, and every portfolio transfer.
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

-- The customer a deal is with: its company, else its contact (re-pointed by merges).
ALTER TABLE deal_facts ADD COLUMN customer_id uuid;
CREATE INDEX deal_facts_customer ON deal_facts (tenant_id, customer_id) WHERE customer_id IS NOT NULL;

-- A contact or company as its events left it.
CREATE TABLE customer_facts (
    tenant_id   text        NOT NULL,
    customer_id uuid        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('contact', 'company')),
    owner       text        NOT NULL,
    lifecycle   text        NOT NULL,
    source      text        NOT NULL,
    company_id  uuid,
    has_email   boolean     NOT NULL,
    has_phone   boolean     NOT NULL,
    has_consent boolean     NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    gone        text        CHECK (gone IN ('deleted', 'erased', 'merged')),
    merged_into uuid,
    PRIMARY KEY (tenant_id, customer_id)
);

-- Each change of a contact or company with its owner after it.
CREATE TABLE customer_versions (
    tenant_id    text        NOT NULL,
    customer_id  uuid        NOT NULL,
    version_time timestamptz NOT NULL,
    owner        text        NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, version_time)
);

-- Every move of a contact's lifecycle stage.
CREATE TABLE lifecycle_facts (
    tenant_id   text        NOT NULL,
    customer_id uuid        NOT NULL,
    time        timestamptz NOT NULL,
    from_stage  text        NOT NULL,
    to_stage    text        NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, time)
);

-- Every interaction: categories, time, length, campaign and the user who had it.
CREATE TABLE interaction_facts (
    tenant_id      text        NOT NULL,
    interaction_id uuid        NOT NULL,
    contact_id     uuid        NOT NULL,
    company_id     uuid,
    kind           text        NOT NULL,
    direction      text        NOT NULL,
    channel        text        NOT NULL,
    time           timestamptz NOT NULL,
    duration_ms    bigint      NOT NULL,
    campaign       text        NOT NULL,
    actor          text        NOT NULL,
    PRIMARY KEY (tenant_id, interaction_id)
);
CREATE INDEX interaction_facts_time ON interaction_facts (tenant_id, time);

-- Every record moved from a user's portfolio to another user's.
CREATE TABLE transfer_facts (
    tenant_id  text        NOT NULL,
    resource   text        NOT NULL,
    time       timestamptz NOT NULL,
    from_owner text        NOT NULL,
    to_owner   text        NOT NULL,
    PRIMARY KEY (tenant_id, resource, time)
);

-- The products of each deal's line items, as its last event lists them (cross-sell).
CREATE TABLE deal_products (
    tenant_id  text NOT NULL,
    deal_id    uuid NOT NULL,
    product_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, product_id)
);

-- Each user's requests per area and day (usage reports added up), for adoption.
CREATE TABLE usage_facts (
    tenant_id text   NOT NULL,
    user_id   text   NOT NULL,
    area      text   NOT NULL,
    day       date   NOT NULL,
    requests  bigint NOT NULL,
    changes   bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, user_id, area)
);

-- Each tenant's analytics settings (the document: domain::settings::Settings).
CREATE TABLE settings (
    tenant_id text  PRIMARY KEY,
    body      jsonb NOT NULL
);

-- Each currency's rate into the tenant's reporting currency, from a month on.
CREATE TABLE exchange_rates (
    tenant_id   text             NOT NULL,
    currency    text             NOT NULL,
    month       text             NOT NULL,
    rate        double precision NOT NULL CHECK (rate > 0),
    update_time timestamptz      NOT NULL,
    updated_by  text             NOT NULL,
    PRIMARY KEY (tenant_id, currency, month)
);

-- The entries into a stage of a period (the stage funnel).
CREATE INDEX deal_transitions_entries ON deal_transitions (tenant_id, time)
    WHERE kind IN ('created', 'moved', 'reopened');

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['stage_facts', 'deal_versions', 'customer_facts', 'customer_versions', 'lifecycle_facts',
                             'interaction_facts', 'transfer_facts', 'settings', 'exchange_rates',
                             'deal_products', 'usage_facts'] LOOP
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
-- How far each consumer (a feed, or one partition of it) has been applied, and how many events
-- it applied (counted in the transaction that applies them: exactly once).
DROP TABLE ingest_watermarks;
CREATE TABLE ingest_watermarks (
    consumer    text        PRIMARY KEY,
    source      text        NOT NULL,
    sequence    bigint      NOT NULL,
    commit_time timestamptz NOT NULL,
    events      bigint      NOT NULL DEFAULT 0
);
GRANT SELECT, INSERT, UPDATE ON ingest_watermarks TO crm_analytics_app;

-- The replicas alive, and which replica follows which partition of a feed
-- (crm_platform::lease).
CREATE TABLE feed_members (
    holder     text        PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE TABLE feed_leases (
    unit       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE ON feed_members, feed_leases TO crm_analytics_app;
