-- A write of contacts in one call. A group of creates used to be six round trips (begin and
-- pin the tenant, the claim check, the write, the candidates' keys, the candidates, commit),
-- and on a machine where the database and the service share the cores most of a group's
-- time was spent between statements. contact_write does the claim check, the company names,
-- the updates, the inserts of rows, match keys and audit entries, and the lookup of the
-- duplicate candidates' keys in one statement, so a group of creates (and an import batch)
-- is one round trip in its own implicit transaction.
--
-- The contacts come as one array per column, creates (p_expected NULL) and updates (the
-- revision they were read at) together; the audit entries are aligned with them (one each,
-- same order). The outcome:
--   ('claimed', kind, NULL, holder): a claimed key (p_claim_*, sorted by the caller) is held
--       by another live contact; nothing was written.
--   ('unknown_company', NULL, NULL, NULL): a contact names a company the tenant does not
--       have; nothing was written.
--   ('held', NULL, i, holder) for each holder of probe key i (1-based, p_probe_*), at most
--       p_per_key per key, merged and erased contacts included: the written rows are there.
-- An update whose revision moved raises SQLSTATE CRM01: the statement, and with it anything
-- written, is rolled back.
--
-- The tenant is pinned for the statement (pin_tenant), as begin_tenant does for a
-- transaction; a call inside a transaction pinned to another tenant is refused. Plans are generic and use
-- indexes only (the statements insert from arrays and probe primary keys, so there is no
-- plan to choose, and a custom plan copied every array into the plan).
-- Pins the tenant for the rest of the transaction (an implicit one: the calling statement),
-- as begin_tenant does; refuses to re-pin a transaction pinned to another tenant.
CREATE FUNCTION pin_tenant(p_tenant text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF coalesce(current_setting('crm.tenant_id', true), '') NOT IN ('', p_tenant) THEN
        RAISE EXCEPTION 'tenant % asked for in a transaction of another tenant', p_tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('crm.tenant_id', p_tenant, true);
END
$$;
GRANT EXECUTE ON FUNCTION pin_tenant(text) TO crm_contact_app;

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
    p_probe_kinds text[], p_probe_values text[], p_per_key bigint)
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

    IF cardinality(p_probe_values) > 0 THEN
        RETURN QUERY SELECT 'held'::text, NULL::text, m.key_index, m.holder
            FROM contact_key_matches(p_tenant, p_probe_kinds, p_probe_values, p_per_key) AS m;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION contact_write(text, text[], text[], uuid[], uuid[], text[], text[], jsonb[], jsonb[],
    text[], text[], uuid[], text[], text[], text[], jsonb[], jsonb[], jsonb[], text[], timestamptz[], timestamptz[],
    bigint[], text[], bigint[], text[], text[], uuid[], uuid[], text[], text[], jsonb[], text[], timestamptz,
    text[], text[], bigint) TO crm_contact_app;

-- The live contacts (neither erased nor merged away) among p_ids, by one primary-key read
-- each: the duplicate candidates once contact_write has found their keys, read in a
-- statement of their own whether or not a transaction is open. The read is planned for each
-- call (EXECUTE): a generic plan made while the table is small ties the primary key with
-- contacts_company, and a connection would keep the wrong one.
CREATE FUNCTION contact_live(p_tenant text, p_ids uuid[])
RETURNS SETOF contacts
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM pin_tenant(p_tenant);
    RETURN QUERY EXECUTE
        'SELECT c.* FROM unnest($2) AS h(id) CROSS JOIN LATERAL (SELECT * FROM contacts WHERE tenant_id = $1 '
        'AND id = h.id AND erase_time IS NULL AND merged_into IS NULL OFFSET 0) AS c'
        USING p_tenant, p_ids;
END
$$;
GRANT EXECUTE ON FUNCTION contact_live(text, uuid[]) TO crm_contact_app;
