-- Events come from the application: each write's events are typed crm.contact.v1 messages the
-- service builds (crm_contact::app::events) and writes in the write's own transaction, with
-- the platform's outbox_append (crm_platform::outbox::migrations). The triggers that made
-- events out of audit entries and interactions, and the function that named their types, go.
-- Events they wrote stay readable until the retention prunes them (outbox format 0).
DROP TRIGGER history_to_outbox ON history;
DROP TRIGGER interactions_to_outbox ON interactions;
DROP FUNCTION history_to_outbox();
DROP FUNCTION interactions_to_outbox();
DROP FUNCTION outbox_event_type(text, text, jsonb);

-- contact_write (migration 0012) takes the events of its writes as well: one array per column,
-- written by outbox_append after the audit entries, in the same statement.
DROP FUNCTION contact_write(text, text[], text[], uuid[], uuid[], text[], text[], jsonb[], jsonb[],
    text[], text[], uuid[], text[], text[], text[], jsonb[], jsonb[], jsonb[], text[], timestamptz[], timestamptz[],
    bigint[], text[], bigint[], text[], text[], uuid[], uuid[], text[], text[], jsonb[], text[], timestamptz,
    text[], text[], bigint);

CREATE FUNCTION contact_write(
    p_tenant text,
    p_claim_kinds text[], p_claim_values text[], p_claimants uuid[],
    p_ids uuid[], p_given_names text[], p_family_names text[], p_emails jsonb[], p_phones jsonb[],
    p_primary_emails text[], p_titles text[], p_companies uuid[], p_stages text[], p_sources text[],
    p_owners text[], p_tags jsonb[], p_attributes jsonb[], p_consents jsonb[], p_search_texts text[],
    p_create_times timestamptz[], p_update_times timestamptz[], p_revisions bigint[], p_external_ids text[],
    p_expected bigint[],
    p_key_kinds text[], p_key_values text[], p_key_contacts uuid[],
    p_audit_ids uuid[], p_audit_actions text[], p_audit_actors text[], p_audit_changes jsonb[],
    p_audit_traces text[], p_audit_time timestamptz,
    p_probe_kinds text[], p_probe_values text[], p_per_key bigint,
    p_event_tenants text[], p_event_ids uuid[], p_event_types text[], p_event_subjects text[],
    p_event_times timestamptz[], p_event_actors text[], p_event_traces text[], p_event_payloads jsonb[])
RETURNS TABLE (outcome text, kind text, key_index bigint, holder uuid)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    v_kind text;
    v_holder uuid;
    v_updates bigint;
    v_updated bigint;
    v_unknown boolean;
BEGIN
    PERFORM pin_tenant(p_tenant);

    IF cardinality(p_claim_values) > 0 THEN
        SELECT c.claim_kind, c.claim_holder INTO v_kind, v_holder
        FROM contact_claim_holder(p_tenant, p_claim_kinds, p_claim_values, p_claimants) AS c;
        IF FOUND THEN
            RETURN QUERY SELECT 'claimed'::text, v_kind, NULL::bigint, v_holder;
            RETURN;
        END IF;
    END IF;

    SELECT EXISTS (
        SELECT 1 FROM unnest(p_companies) AS w(company_id)
        WHERE w.company_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM companies AS co WHERE co.tenant_id = p_tenant AND co.id = w.company_id))
    INTO v_unknown;
    IF v_unknown THEN
        RETURN QUERY SELECT 'unknown_company'::text, NULL::text, NULL::bigint, NULL::uuid;
        RETURN;
    END IF;

    SELECT count(*) INTO v_updates FROM unnest(p_expected) AS e(expected) WHERE e.expected IS NOT NULL;
    IF v_updates > 0 THEN
        UPDATE contacts AS c SET given_name = u.given_name, family_name = u.family_name, emails = u.emails,
            phones = u.phones, primary_email = u.primary_email, title = u.title, company_id = u.company_id,
            company_name = co.display_name, lifecycle_stage = u.lifecycle_stage, source = u.source,
            owner = u.owner, tags = ARRAY(SELECT jsonb_array_elements_text(u.tags)), attributes = u.attributes,
            consent = u.consent, search_text = u.search_text, update_time = u.update_time,
            revision = u.revision, external_id = u.external_id
        FROM unnest(p_ids, p_given_names, p_family_names, p_emails, p_phones, p_primary_emails, p_titles,
                    p_companies, p_stages, p_sources, p_owners, p_tags, p_attributes, p_consents,
                    p_search_texts, p_update_times, p_revisions, p_external_ids, p_expected)
             AS u(id, given_name, family_name, emails, phones, primary_email, title, company_id,
                  lifecycle_stage, source, owner, tags, attributes, consent, search_text, update_time,
                  revision, external_id, expected)
        LEFT JOIN companies AS co ON co.tenant_id = p_tenant AND co.id = u.company_id
        WHERE u.expected IS NOT NULL AND c.tenant_id = p_tenant AND c.id = u.id AND c.revision = u.expected;
        GET DIAGNOSTICS v_updated = ROW_COUNT;
        IF v_updated <> v_updates THEN
            RAISE EXCEPTION 'a contact changed since it was read' USING ERRCODE = 'CRM01';
        END IF;
        DELETE FROM contact_keys AS k
        USING unnest(p_ids, p_expected) AS u(id, expected)
        WHERE u.expected IS NOT NULL AND k.tenant_id = p_tenant AND k.contact_id = u.id;
    END IF;

    INSERT INTO contacts (tenant_id, id, given_name, family_name, emails, phones, primary_email, title,
        company_id, company_name, lifecycle_stage, source, owner, tags, attributes, consent, search_text,
        create_time, update_time, revision, external_id)
    SELECT p_tenant, u.id, u.given_name, u.family_name, u.emails, u.phones, u.primary_email, u.title,
        u.company_id, co.display_name, u.lifecycle_stage, u.source, u.owner,
        ARRAY(SELECT jsonb_array_elements_text(u.tags)), u.attributes, u.consent, u.search_text,
        u.create_time, u.update_time, u.revision, u.external_id
    FROM unnest(p_ids, p_given_names, p_family_names, p_emails, p_phones, p_primary_emails, p_titles,
                p_companies, p_stages, p_sources, p_owners, p_tags, p_attributes, p_consents,
                p_search_texts, p_create_times, p_update_times, p_revisions, p_external_ids, p_expected)
         AS u(id, given_name, family_name, emails, phones, primary_email, title, company_id,
              lifecycle_stage, source, owner, tags, attributes, consent, search_text, create_time,
              update_time, revision, external_id, expected)
    LEFT JOIN companies AS co ON co.tenant_id = p_tenant AND co.id = u.company_id
    WHERE u.expected IS NULL;

    INSERT INTO contact_keys (tenant_id, kind, value, contact_id)
    SELECT p_tenant, k.kind, k.value, k.contact_id
    FROM unnest(p_key_kinds, p_key_values, p_key_contacts) AS k(kind, value, contact_id);

    INSERT INTO history (tenant_id, id, resource_kind, resource_id, action, actor, create_time, changes, traceparent)
    SELECT p_tenant, h.id, 'contact', h.resource_id, h.action, h.actor, p_audit_time, h.changes,
           coalesce(h.traceparent, '')
    FROM unnest(p_audit_ids, p_ids, p_audit_actions, p_audit_actors, p_audit_changes, p_audit_traces)
         AS h(id, resource_id, action, actor, changes, traceparent);

    PERFORM outbox_append(p_event_tenants, p_event_ids, p_event_types, p_event_subjects, p_event_times,
                          p_event_actors, p_event_traces, p_event_payloads);

    IF cardinality(p_probe_values) > 0 THEN
        RETURN QUERY SELECT 'held'::text, NULL::text, m.key_index, m.holder
            FROM contact_key_matches(p_tenant, p_probe_kinds, p_probe_values, p_per_key) AS m;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION contact_write(text, text[], text[], uuid[], uuid[], text[], text[], jsonb[], jsonb[],
    text[], text[], uuid[], text[], text[], text[], jsonb[], jsonb[], jsonb[], text[], timestamptz[], timestamptz[],
    bigint[], text[], bigint[], text[], text[], uuid[], uuid[], text[], text[], jsonb[], text[], timestamptz,
    text[], text[], bigint, text[], uuid[], text[], text[], timestamptz[], text[], text[], jsonb[]) TO crm_contact_app;
