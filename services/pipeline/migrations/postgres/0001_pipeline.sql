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

-- The board's counts and totals: open deals per pipeline, stage, currency and owner, kept by
-- the trigger below in the transaction of every deal write, so a board never scans its
-- deals. Each group is split over 8 rows (by deal id), so concurrent writers rarely wait on
-- one another.
CREATE TABLE board_counts (
    tenant_id   text     NOT NULL,
    pipeline_id text     NOT NULL,
    stage_id    text     NOT NULL,
    currency    text     NOT NULL,
    owner       text     NOT NULL,
    shard       smallint NOT NULL,
    deals       bigint   NOT NULL,
    amount      bigint   NOT NULL,
    PRIMARY KEY (tenant_id, pipeline_id, stage_id, currency, owner, shard)
);

CREATE FUNCTION deals_to_board() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'open' THEN
        UPDATE board_counts SET deals = deals - 1, amount = amount - OLD.amount_minor
        WHERE tenant_id = OLD.tenant_id AND pipeline_id = OLD.pipeline_id AND stage_id = OLD.stage_id
          AND currency = OLD.currency AND owner = OLD.owner AND shard = get_byte(uuid_send(OLD.id), 15) % 8;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'open' THEN
        INSERT INTO board_counts (tenant_id, pipeline_id, stage_id, currency, owner, shard, deals, amount)
        VALUES (NEW.tenant_id, NEW.pipeline_id, NEW.stage_id, NEW.currency, NEW.owner,
                get_byte(uuid_send(NEW.id), 15) % 8, 1, NEW.amount_minor)
        ON CONFLICT (tenant_id, pipeline_id, stage_id, currency, owner, shard)
        DO UPDATE SET deals = board_counts.deals + 1, amount = board_counts.amount + excluded.amount;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER deals_to_board AFTER INSERT OR UPDATE OR DELETE ON deals
    FOR EACH ROW EXECUTE FUNCTION deals_to_board();

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
    FOREACH t IN ARRAY ARRAY['pipelines', 'leads', 'deals', 'board_counts', 'deal_transitions', 'products', 'tasks', 'forecasts',
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
