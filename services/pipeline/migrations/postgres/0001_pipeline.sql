-- Pipeline service schema. Each kind of record is a document (body) with columns derived from
-- it by the database (generated columns) for the queries; a deal's stage history is typed and
-- append-only. Every table carries tenant_id and is guarded by row-level security (enabled and
-- forced) against the tenant pinned per transaction in crm.tenant_id; internal work across
-- tenants (the due-task scheduler, the outbox sequencer) sets crm.all_tenants for its
-- transaction only.

DO $$
BEGIN
    CREATE ROLE crm_pipeline_app NOLOGIN NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT crm_pipeline_app TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;

CREATE TABLE pipelines (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    revision    bigint      NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE leads (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    revision    bigint      NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    owner       text GENERATED ALWAYS AS (body->>'owner') STORED,
    status      text GENERATED ALWAYS AS (body->>'status') STORED,
    contact_id  text GENERATED ALWAYS AS (body->>'contact') STORED,
    company_id  text GENERATED ALWAYS AS (body->>'company') STORED,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX leads_owner ON leads (tenant_id, owner, id);
CREATE INDEX leads_status ON leads (tenant_id, status, id);
CREATE INDEX leads_contact ON leads (tenant_id, contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX leads_company ON leads (tenant_id, company_id) WHERE company_id IS NOT NULL;

CREATE TABLE deals (
    tenant_id    text        NOT NULL,
    id           uuid        NOT NULL,
    revision     bigint      NOT NULL,
    create_time  timestamptz NOT NULL,
    update_time  timestamptz NOT NULL,
    body         jsonb       NOT NULL,
    owner        text GENERATED ALWAYS AS (body->>'owner') STORED,
    status       text GENERATED ALWAYS AS (body->>'status') STORED,
    pipeline_id  text GENERATED ALWAYS AS (body->>'pipeline') STORED,
    stage_id     text GENERATED ALWAYS AS (body->>'stage') STORED,
    contact_id   text GENERATED ALWAYS AS (body->>'contact') STORED,
    company_id   text GENERATED ALWAYS AS (body->>'company') STORED,
    amount_minor bigint GENERATED ALWAYS AS ((body->'amount'->>'minor')::bigint) STORED,
    currency     text GENERATED ALWAYS AS (body->'amount'->>'currency') STORED,
    close_date   text GENERATED ALWAYS AS (body->>'close_date') STORED,
    PRIMARY KEY (tenant_id, id)
);
-- The board: a pipeline's open deals by stage, counted and summed from the index alone.
CREATE INDEX deals_board ON deals (tenant_id, pipeline_id, status, stage_id, close_date, id)
    INCLUDE (currency, amount_minor, owner);
CREATE INDEX deals_owner ON deals (tenant_id, owner, id);
CREATE INDEX deals_status ON deals (tenant_id, status, id);
CREATE INDEX deals_contact ON deals (tenant_id, contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX deals_company ON deals (tenant_id, company_id) WHERE company_id IS NOT NULL;

CREATE TABLE deal_transitions (
    tenant_id       text        NOT NULL,
    deal_id         uuid        NOT NULL,
    seq             bigint      NOT NULL,
    kind            text        NOT NULL,
    from_stage      uuid,
    to_stage        uuid        NOT NULL,
    from_stage_name text        NOT NULL,
    to_stage_name   text        NOT NULL,
    amount_minor    bigint      NOT NULL,
    currency        text        NOT NULL,
    actor           text        NOT NULL,
    time            timestamptz NOT NULL,
    reason          text        NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, seq)
);

CREATE TABLE products (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    revision    bigint      NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    sku         text GENERATED ALWAYS AS (body->>'sku') STORED,
    active      boolean GENERATED ALWAYS AS ((body->>'active')::boolean) STORED,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX products_sku ON products (tenant_id, sku);

CREATE TABLE tasks (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    revision    bigint      NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    owner       text GENERATED ALWAYS AS (body->>'assignee') STORED,
    status      text GENERATED ALWAYS AS (body->>'status') STORED,
    contact_id  text GENERATED ALWAYS AS (body->>'contact') STORED,
    -- Due time in microseconds; tasks without one sort last.
    due_order   bigint GENERATED ALWAYS AS (coalesce((body->>'due')::bigint, 9223372036854775807)) STORED,
    -- The due time whose TaskDue is still owed (open, due set, not yet published for it).
    pending_due bigint GENERATED ALWAYS AS (
        CASE WHEN body->>'status' = 'open' AND body->>'due' IS NOT NULL
                  AND (body->>'due_notified' IS NULL OR body->>'due_notified' <> body->>'due')
             THEN (body->>'due')::bigint END) STORED,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX tasks_owner ON tasks (tenant_id, owner, due_order, id);
CREATE INDEX tasks_due ON tasks (tenant_id, due_order, id);
CREATE INDEX tasks_contact ON tasks (tenant_id, contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX tasks_pending_due ON tasks (pending_due) WHERE pending_due IS NOT NULL;

CREATE TABLE forecasts (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    revision    bigint      NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    owner       text GENERATED ALWAYS AS (body->>'owner') STORED,
    period      text GENERATED ALWAYS AS (body->>'period') STORED,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX forecasts_owner ON forecasts (tenant_id, owner, period);

CREATE TABLE quotas (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    revision    bigint      NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    owner       text GENERATED ALWAYS AS (body->>'owner') STORED,
    period      text GENERATED ALWAYS AS (body->>'period') STORED,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX quotas_owner_period ON quotas (tenant_id, owner, period);

CREATE TABLE idempotency_keys (
    tenant_id   text        NOT NULL,
    kind        text        NOT NULL,
    request_id  text        NOT NULL,
    fingerprint text        NOT NULL,
    resource_id uuid        NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, request_id)
);

-- The outbox (crm_platform::outbox; rows are written by the store in the change's own
-- transaction and numbered by the sequencer after commit).
CREATE TABLE outbox_events (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    seq         bigint,
    type        text        NOT NULL,
    subject     text        NOT NULL,
    time        timestamptz NOT NULL,
    actor       text        NOT NULL,
    traceparent text        NOT NULL DEFAULT '',
    payload     jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX outbox_events_seq ON outbox_events (seq);
CREATE INDEX outbox_events_unsequenced ON outbox_events (id) WHERE seq IS NULL;
CREATE INDEX outbox_events_tenant_seq ON outbox_events (tenant_id, seq);

CREATE TABLE outbox_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint  NOT NULL
);
INSERT INTO outbox_head (seq) VALUES (0);

-- The audit log: every event, kept when the outbox is pruned (copied by trigger, so nothing
-- can be published without being audited).
CREATE TABLE audit_log (
    tenant_id text        NOT NULL,
    id        uuid        NOT NULL,
    type      text        NOT NULL,
    subject   text        NOT NULL,
    time      timestamptz NOT NULL,
    actor     text        NOT NULL,
    payload   jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_log_subject ON audit_log (tenant_id, subject, time);

CREATE FUNCTION outbox_to_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (tenant_id, id, type, subject, time, actor, payload)
    SELECT tenant_id, id, type, subject, time, actor, payload FROM new_rows;
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_to_audit AFTER INSERT ON outbox_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_to_audit();

-- Contacts the contact service merged away, and their survivor (kept current through chains
-- of merges), so that erasing a person also removes what was recorded under their old ids.
CREATE TABLE contact_merges (
    tenant_id   text NOT NULL,
    merged_id   uuid NOT NULL,
    survivor_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, merged_id)
);
CREATE INDEX contact_merges_survivor ON contact_merges (tenant_id, survivor_id);

-- Checkpoints of the feeds this service follows (the contact service's).
CREATE TABLE feed_checkpoints (
    consumer    text        PRIMARY KEY,
    seq         bigint      NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON feed_checkpoints TO crm_pipeline_app;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['pipelines', 'leads', 'deals', 'deal_transitions', 'products', 'tasks', 'forecasts',
                             'quotas', 'idempotency_keys', 'outbox_events', 'audit_log', 'contact_merges'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')
            WITH CHECK (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO crm_pipeline_app', t);
    END LOOP;
END
$$;
GRANT SELECT, UPDATE ON outbox_head TO crm_pipeline_app;
GRANT USAGE ON SCHEMA public TO crm_pipeline_app;
