-- Statements of every create that need no per-call planning.
--
-- Serving connections plan every statement for its parameters (plan_cache_mode =
-- force_custom_plan), because generic plans chosen while the tables were small stuck as
-- sequential scans. That planning was about a third of PostgreSQL's time in a create.

-- The claim check is an equality probe of contact_keys' primary key per value whatever the
-- table sizes (checked with a plan made over empty tables), so it lives in a function that
-- keeps one generic plan per connection, with sequential scans and hash and merge joins ruled
-- out. It runs as the caller (row-level security applies) and takes a snapshot per statement.
-- (The duplicate-candidate lookup was tried as such a function and left a statement: its
-- read of the contacts found, planned over a table whose statistics still said it was
-- empty, scanned the whole tenant for every id.)

-- Locks each claimed (kind, value) for the rest of the transaction, in the order given
-- (callers sort them, so two transactions never wait on each other), then returns one live
-- contact other than its claimant holding one of them. The lock serialises two writers of
-- one value; the lookup, a statement after the lock, sees the first writer's commit.
CREATE FUNCTION contact_claim_holder(p_tenant text, p_kinds text[], p_values text[], p_claimants uuid[])
RETURNS TABLE (claim_kind text, claim_holder uuid)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    PERFORM count(*) FROM (
        SELECT pg_advisory_xact_lock(hashtextextended(p_tenant || '/' || k.kind || '/' || k.value, 0))
        FROM unnest(p_kinds, p_values) WITH ORDINALITY AS k(kind, value, n) ORDER BY k.n) AS locked;
    RETURN QUERY
        SELECT v.kind, m.contact_id
        FROM unnest(p_kinds, p_values, p_claimants) AS v(kind, value, own)
        CROSS JOIN LATERAL (SELECT ck.contact_id FROM contact_keys AS ck
                            WHERE ck.tenant_id = p_tenant AND ck.kind = v.kind AND ck.value = v.value
                              AND ck.contact_id <> v.own
                            LIMIT 1) AS m
        LIMIT 1;
END
$$;

-- The holders of each of p_values as a key of p_kind (an import's natural keys), by the same
-- primary-key equality probe.
CREATE FUNCTION contact_key_holders(p_tenant text, p_kind text, p_values text[])
RETURNS TABLE (key_value text, holder uuid)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    RETURN QUERY
        SELECT v.value, m.contact_id
        FROM unnest(p_values) AS v(value)
        CROSS JOIN LATERAL (SELECT ck.contact_id FROM contact_keys AS ck
                            WHERE ck.tenant_id = p_tenant AND ck.kind = p_kind AND ck.value = v.value
                            OFFSET 0) AS m;
END
$$;

GRANT EXECUTE ON FUNCTION contact_claim_holder(text, text[], text[], uuid[]) TO crm_contact_app;
GRANT EXECUTE ON FUNCTION contact_key_holders(text, text, text[]) TO crm_contact_app;

-- The event type of an audit entry. The first version's subquery kept the function from being
-- inlined, so it was planned again for every row the outbox trigger wrote; without one it is
-- an expression of the trigger's statement, which now calls it where it can be inlined.
CREATE OR REPLACE FUNCTION outbox_event_type(kind text, action text, changes jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN kind = 'contact' AND action = 'created' THEN 'crm.contact.v1.ContactCreated'
        WHEN kind = 'contact' AND action = 'updated'
             AND NOT jsonb_path_exists(changes, '$[*] ? (@.field != "consent")')
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

-- Creates written together in one transaction come from different requests, so the trace of
-- each rides on its audit entry; an entry without one takes the transaction's.
ALTER TABLE history ADD COLUMN traceparent text NOT NULL DEFAULT '';

CREATE OR REPLACE FUNCTION history_to_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_events (tenant_id, id, type, subject, time, actor, traceparent, payload)
    SELECT h.tenant_id, h.id, h.type,
           CASE h.resource_kind WHEN 'company' THEN 'companies/' ELSE 'contacts/' END || h.resource_id,
           h.create_time, h.actor, coalesce(nullif(h.traceparent, ''), current_setting('crm.traceparent', true), ''),
           jsonb_build_object('action', h.action, 'changes', h.changes)
    FROM (SELECT n.*, outbox_event_type(n.resource_kind, n.action, n.changes) AS type FROM new_rows AS n) AS h
    WHERE h.type IS NOT NULL;
    PERFORM pg_notify('crm_outbox', '');
    RETURN NULL;
END
$$;
