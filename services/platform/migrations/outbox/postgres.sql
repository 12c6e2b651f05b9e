-- The transactional outbox of a producing service (crm_platform::outbox), for every service
-- alike: events are written with the change they report, in its transaction, by
-- outbox_append, and numbered once committed by the sequencer. Written so that it can run
-- over an outbox created by a service's own early migrations: it brings that one to this
-- shape and changes nothing else. `{app_role}` is the service's serving role.
--
-- Rows are inserted without a sequence number; the sequencer (one at a time, serialised on
-- outbox_head's row) numbers committed rows in id order, so the per-source sequence is
-- gap-free and a row only becomes visible to the feed once every smaller number is too.
-- `format` is how the payload is written: 1, proto3 JSON of the message `type` names; 0, a
-- service's own earlier form (rows written before this migration).
CREATE TABLE IF NOT EXISTS outbox_events (
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
ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS format smallint NOT NULL DEFAULT 0;
-- Only numbered events belong in the sequence indexes (the unnumbered are found through
-- outbox_events_unsequenced, by an index scan in id order).
CREATE UNIQUE INDEX IF NOT EXISTS outbox_events_seq ON outbox_events (seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_events_unsequenced ON outbox_events (id) WHERE seq IS NULL;
-- A tenant's feed reads its events in sequence order.
CREATE INDEX IF NOT EXISTS outbox_events_tenant_seq ON outbox_events (tenant_id, seq) WHERE seq IS NOT NULL;

CREATE TABLE IF NOT EXISTS outbox_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint  NOT NULL
);
INSERT INTO outbox_head (seq) VALUES (0) ON CONFLICT DO NOTHING;

-- A tenant's transactions see their tenant's events; the sequencer, the pruner and service
-- principals read across tenants with crm.all_tenants set for their transaction only.
ALTER TABLE outbox_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox_events FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    CREATE POLICY tenant_isolation ON outbox_events
        USING (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')
        WITH CHECK (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on');
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;

-- Appends events (one array per column) and wakes the sequencer, which hears it on commit:
-- the one way events are written, from the services' code (crm_platform::outbox::append_pg)
-- and from their one-call write functions.
CREATE OR REPLACE FUNCTION outbox_append(
    p_tenants text[], p_ids uuid[], p_types text[], p_subjects text[], p_times timestamptz[],
    p_actors text[], p_traceparents text[], p_payloads jsonb[])
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF cardinality(p_ids) > 0 THEN
        INSERT INTO outbox_events (tenant_id, id, type, subject, time, actor, traceparent, payload, format)
        SELECT e.tenant_id, e.id, e.type, e.subject, e.time, e.actor, e.traceparent, e.payload, 1
        FROM unnest(p_tenants, p_ids, p_types, p_subjects, p_times, p_actors, p_traceparents, p_payloads)
             AS e(tenant_id, id, type, subject, time, actor, traceparent, payload);
        PERFORM pg_notify('crm_outbox', '');
    END IF;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_events TO {app_role};
GRANT SELECT, UPDATE ON outbox_head TO {app_role};
GRANT EXECUTE ON FUNCTION outbox_append(text[], uuid[], text[], text[], timestamptz[], text[], text[], jsonb[]) TO {app_role};
