-- The transactional outbox of the contact service (crm.events.v1; the reading side is
-- crm_platform::outbox). An event row is written by the same statement that records the change
-- (triggers on history and interactions), so no write path can change state without its
-- event, and none can publish an event whose change did not commit.
--
-- Rows are inserted without a sequence number; the sequencer (one at a time, serialised on
-- outbox_head's row) numbers committed rows in id order, so the per-source sequence is
-- gap-free and a row only becomes visible to the feed once every smaller number is too.
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
-- A tenant's feed reads its events in sequence order.
CREATE INDEX outbox_events_tenant_seq ON outbox_events (tenant_id, seq);

CREATE TABLE outbox_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint  NOT NULL
);
INSERT INTO outbox_head (seq) VALUES (0);

-- A tenant's transactions see their tenant's events; the sequencer, the pruner and service
-- principals read across tenants with crm.all_tenants set for their transaction only.
ALTER TABLE outbox_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox_events
    USING (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on');
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_events TO crm_contact_app;
GRANT SELECT, UPDATE ON outbox_head TO crm_contact_app;

-- The event type of an audit entry, or NULL for entries that are not events of their own (a
-- contact merged away is told by its survivor's ContactsMerged).
CREATE FUNCTION outbox_event_type(kind text, action text, changes jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN kind = 'contact' AND action = 'created' THEN 'crm.contact.v1.ContactCreated'
        WHEN kind = 'contact' AND action = 'updated'
             AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(changes) AS c WHERE c->>'field' <> 'consent')
             THEN 'crm.contact.v1.ConsentChanged'
        WHEN kind = 'contact' AND action = 'updated' THEN 'crm.contact.v1.ContactUpdated'
        WHEN kind = 'contact' AND action = 'deleted' THEN 'crm.contact.v1.ContactDeleted'
        WHEN kind = 'contact' AND action = 'erased' THEN 'crm.contact.v1.ContactErased'
        WHEN kind = 'contact' AND action = 'merged' AND changes @> '[{"field": "merged"}]' THEN 'crm.contact.v1.ContactsMerged'
        WHEN kind IN ('contact', 'company') AND action = 'reassigned' THEN 'crm.contact.v1.OwnerChanged'
        WHEN kind = 'company' AND action = 'created' THEN 'crm.contact.v1.CompanyCreated'
        WHEN kind = 'company' AND action = 'updated' THEN 'crm.contact.v1.CompanyUpdated'
        WHEN kind = 'company' AND action = 'deleted' THEN 'crm.contact.v1.CompanyDeleted'
        WHEN kind = 'company' AND action = 'merged' AND changes @> '[{"field": "merged"}]' THEN 'crm.contact.v1.CompaniesMerged'
    END
$$;

CREATE FUNCTION history_to_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_events (tenant_id, id, type, subject, time, actor, traceparent, payload)
    SELECT h.tenant_id, h.id, t.type,
           CASE h.resource_kind WHEN 'company' THEN 'companies/' ELSE 'contacts/' END || h.resource_id,
           h.create_time, h.actor, coalesce(current_setting('crm.traceparent', true), ''),
           jsonb_build_object('action', h.action, 'changes', h.changes)
    FROM new_rows AS h, outbox_event_type(h.resource_kind, h.action, h.changes) AS t(type)
    WHERE t.type IS NOT NULL;
    PERFORM pg_notify('crm_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER history_to_outbox AFTER INSERT ON history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION history_to_outbox();

-- An interaction's event carries what analytics counts, never its subject, body or outcome.
CREATE FUNCTION interactions_to_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_events (tenant_id, id, type, subject, time, actor, traceparent, payload)
    SELECT i.tenant_id, i.id, 'crm.contact.v1.InteractionLogged',
           'contacts/' || i.contact_id || '/interactions/' || i.id, i.create_time, i.actor,
           coalesce(current_setting('crm.traceparent', true), ''),
           jsonb_build_object('contact', 'contacts/' || i.contact_id,
                              'company', CASE WHEN i.company_id IS NULL THEN '' ELSE 'companies/' || i.company_id END,
                              'kind', i.kind, 'direction', i.direction, 'channel', coalesce(i.channel, ''),
                              'occur_time_micros', (extract(epoch FROM i.occur_time) * 1000000)::bigint, 'duration_ms', coalesce(i.duration_ms, 0),
                              'campaign_id', i.campaign_id)
    FROM new_rows AS i;
    PERFORM pg_notify('crm_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER interactions_to_outbox AFTER INSERT ON interactions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION interactions_to_outbox();
