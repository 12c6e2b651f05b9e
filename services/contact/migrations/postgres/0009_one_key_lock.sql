-- The lock of claimed key values is taken in one place: the claim check of 0008 spelled out
-- the same advisory-lock statement the store runs for company domains, and two spellings of
-- one lock key can drift apart (two writers of one value would then not wait on each other).

-- Takes the transaction-scoped lock of each (kind, value) of a tenant, in the order given;
-- callers pass them sorted, so two transactions never wait on each other.
CREATE FUNCTION lock_key_values(p_tenant text, p_kinds text[], p_values text[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM count(*) FROM (
        SELECT pg_advisory_xact_lock(hashtextextended(p_tenant || '/' || k.kind || '/' || k.value, 0))
        FROM unnest(p_kinds, p_values) WITH ORDINALITY AS k(kind, value, n) ORDER BY k.n) AS locked;
END
$$;
GRANT EXECUTE ON FUNCTION lock_key_values(text, text[], text[]) TO crm_contact_app;

CREATE OR REPLACE FUNCTION contact_claim_holder(p_tenant text, p_kinds text[], p_values text[], p_claimants uuid[])
RETURNS TABLE (claim_kind text, claim_holder uuid)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    PERFORM lock_key_values(p_tenant, p_kinds, p_values);
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
