-- Notification service schema: webhook endpoints and rules per tenant, the deliveries and
-- in-app notifications the rules made of the followed feeds' events (each (rule, event,
-- recipient) once), every attempt at a delivery, and the checkpoint of each followed feed.
-- Every tenant table carries tenant_id and is guarded by row-level security (enabled and
-- forced) against the tenant pinned per transaction in crm.tenant_id; the delivery worker,
-- which claims every tenant's due deliveries, reads deliveries and endpoints with
-- crm.all_tenants set for its transaction only.

DO $$
BEGIN
    CREATE ROLE crm_notification_app NOLOGIN NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT crm_notification_app TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;

CREATE TABLE webhook_endpoints (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    url         text        NOT NULL,
    event_types jsonb       NOT NULL,
    description text        NOT NULL,
    secret      text        NOT NULL,
    create_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE rules (
    tenant_id    text        NOT NULL,
    id           uuid        NOT NULL,
    display_name text        NOT NULL,
    event_types  jsonb       NOT NULL,
    condition    text        NOT NULL,
    recipients   jsonb       NOT NULL,
    created_by   text        NOT NULL,
    create_time  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE deliveries (
    tenant_id         text        NOT NULL,
    id                uuid        NOT NULL,
    rule_id           uuid        NOT NULL,
    endpoint_id       uuid        NOT NULL,
    event_id          text        NOT NULL,
    event_type        text        NOT NULL,
    body              text        NOT NULL,
    state             text        NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_time timestamptz,
    -- Until when a worker holds it for an attempt; after, any worker may claim it again.
    lease_until       timestamptz,
    create_time       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT deliveries_once UNIQUE (tenant_id, rule_id, event_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_time) WHERE state = 'pending';

CREATE TABLE delivery_attempts (
    tenant_id     text        NOT NULL,
    delivery_id   uuid        NOT NULL,
    attempt       integer     NOT NULL,
    time          timestamptz NOT NULL,
    status_code   integer     NOT NULL,
    error         text        NOT NULL,
    latency_ms    bigint      NOT NULL,
    response_head text        NOT NULL,
    PRIMARY KEY (tenant_id, delivery_id, attempt)
);

CREATE TABLE notifications (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    user_id     text        NOT NULL,
    rule_id     uuid        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    subject     text        NOT NULL,
    title       text        NOT NULL,
    read        boolean     NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT notifications_once UNIQUE (tenant_id, rule_id, event_id, user_id)
);
CREATE INDEX notifications_inbox ON notifications (tenant_id, user_id, id DESC);
CREATE INDEX notifications_unread ON notifications (tenant_id, user_id, id DESC) WHERE NOT read;

CREATE TABLE feed_checkpoints (
    consumer    text        PRIMARY KEY,
    seq         bigint      NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON feed_checkpoints TO crm_notification_app;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhook_endpoints', 'rules', 'deliveries', 'delivery_attempts', 'notifications'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO crm_notification_app', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['rules', 'delivery_attempts', 'notifications'] LOOP
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = current_setting('crm.tenant_id', true))
            WITH CHECK (tenant_id = current_setting('crm.tenant_id', true))$p$, t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['webhook_endpoints', 'deliveries'] LOOP
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')
            WITH CHECK (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')$p$, t);
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA public TO crm_notification_app;
