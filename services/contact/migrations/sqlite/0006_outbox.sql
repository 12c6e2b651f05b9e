-- The transactional outbox of the contact service (see the PostgreSQL migration of the same
-- name). SQLite writers are serialised, so the triggers number events as they are written:
-- the sequence is gap-free and in commit order.
CREATE TABLE outbox_events (
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    seq         INTEGER NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    time        INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    traceparent TEXT    NOT NULL DEFAULT '',
    payload     TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
-- A tenant's feed reads its events in sequence order.
CREATE INDEX outbox_events_tenant_seq ON outbox_events (tenant_id, seq);

CREATE TABLE outbox_head (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    seq      INTEGER NOT NULL
);
INSERT INTO outbox_head (only_row, seq) VALUES (1, 0);

-- The traceparent of the write transaction under way, set by the store when it begins one.
CREATE TABLE outbox_context (
    only_row    INTEGER PRIMARY KEY CHECK (only_row = 1),
    traceparent TEXT    NOT NULL
);
INSERT INTO outbox_context (only_row, traceparent) VALUES (1, '');

CREATE TRIGGER history_to_outbox AFTER INSERT ON history
WHEN (NEW.resource_kind IN ('contact', 'company') AND NEW.action IN ('created', 'updated', 'deleted', 'erased', 'reassigned'))
  OR (NEW.action = 'merged' AND EXISTS (SELECT 1 FROM json_each(NEW.changes) AS c WHERE json_extract(c.value, '$.field') = 'merged'))
BEGIN
    UPDATE outbox_head SET seq = seq + 1;
    INSERT INTO outbox_events (tenant_id, id, seq, type, subject, time, actor, traceparent, payload)
    VALUES (
        NEW.tenant_id, NEW.id, (SELECT seq FROM outbox_head),
        CASE
            WHEN NEW.resource_kind = 'contact' AND NEW.action = 'created' THEN 'crm.contact.v1.ContactCreated'
            WHEN NEW.resource_kind = 'contact' AND NEW.action = 'updated'
                 AND NOT EXISTS (SELECT 1 FROM json_each(NEW.changes) AS c WHERE json_extract(c.value, '$.field') <> 'consent')
                 THEN 'crm.contact.v1.ConsentChanged'
            WHEN NEW.resource_kind = 'contact' AND NEW.action = 'updated' THEN 'crm.contact.v1.ContactUpdated'
            WHEN NEW.resource_kind = 'contact' AND NEW.action = 'deleted' THEN 'crm.contact.v1.ContactDeleted'
            WHEN NEW.resource_kind = 'contact' AND NEW.action = 'erased' THEN 'crm.contact.v1.ContactErased'
            WHEN NEW.resource_kind = 'contact' AND NEW.action = 'merged' THEN 'crm.contact.v1.ContactsMerged'
            WHEN NEW.action = 'reassigned' THEN 'crm.contact.v1.OwnerChanged'
            WHEN NEW.action = 'created' THEN 'crm.contact.v1.CompanyCreated'
            WHEN NEW.action = 'updated' THEN 'crm.contact.v1.CompanyUpdated'
            WHEN NEW.action = 'deleted' THEN 'crm.contact.v1.CompanyDeleted'
            ELSE 'crm.contact.v1.CompaniesMerged'
        END,
        CASE NEW.resource_kind WHEN 'company' THEN 'companies/' ELSE 'contacts/' END || NEW.resource_id,
        NEW.create_time, NEW.actor, (SELECT traceparent FROM outbox_context),
        json_object('action', NEW.action, 'changes', json(NEW.changes))
    );
END;

CREATE TRIGGER interactions_to_outbox AFTER INSERT ON interactions
BEGIN
    UPDATE outbox_head SET seq = seq + 1;
    INSERT INTO outbox_events (tenant_id, id, seq, type, subject, time, actor, traceparent, payload)
    VALUES (
        NEW.tenant_id, NEW.id, (SELECT seq FROM outbox_head), 'crm.contact.v1.InteractionLogged',
        'contacts/' || NEW.contact_id || '/interactions/' || NEW.id, NEW.create_time, NEW.actor,
        (SELECT traceparent FROM outbox_context),
        json_object('contact', 'contacts/' || NEW.contact_id,
                    'company', CASE WHEN NEW.company_id IS NULL THEN '' ELSE 'companies/' || NEW.company_id END,
                    'kind', NEW.kind, 'direction', NEW.direction, 'channel', coalesce(NEW.channel, ''),
                    'occur_time_micros', NEW.occur_time, 'duration_ms', coalesce(NEW.duration_ms, 0),
                    'campaign_id', NEW.campaign_id)
    );
END;
