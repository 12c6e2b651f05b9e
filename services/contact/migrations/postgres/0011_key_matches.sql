-- The holders of any mix of match keys, at most p_limit per key (NULL: all), as the key's
-- index in the arrays and the contact: the lookup of duplicate candidates and of an
-- import's natural keys. Like contact_claim_holder, one generic plan per connection that is
-- a primary-key probe of contact_keys per key whatever the table sizes. The contacts found
-- are read by the store afterwards, only when there are any (most creates find none), by a
-- primary-key read per id. The candidate lookup used to be one statement joining the two,
-- planned for every call: 0.35 ms of planning per create.
-- (contact_key_holders of 0008 stays for servers of the previous release during a rolling
-- upgrade; this release no longer calls it.)
CREATE FUNCTION contact_key_matches(p_tenant text, p_kinds text[], p_values text[], p_limit bigint)
RETURNS TABLE (key_index bigint, holder uuid)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    RETURN QUERY
        SELECT v.n, m.contact_id
        FROM unnest(p_kinds, p_values) WITH ORDINALITY AS v(kind, value, n)
        CROSS JOIN LATERAL (SELECT ck.contact_id FROM contact_keys AS ck
                            WHERE ck.tenant_id = p_tenant AND ck.kind = v.kind AND ck.value = v.value
                            LIMIT p_limit) AS m;
END
$$;
GRANT EXECUTE ON FUNCTION contact_key_matches(text, text[], text[], bigint) TO crm_contact_app;

-- The claim check probes the same keys: it takes the locks, then asks contact_key_matches
-- (two holders per key at most: the claimant itself and one other are enough to decide), so
-- the primary-key probe of contact_keys is written once.
CREATE OR REPLACE FUNCTION contact_claim_holder(p_tenant text, p_kinds text[], p_values text[], p_claimants uuid[])
RETURNS TABLE (claim_kind text, claim_holder uuid)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    PERFORM lock_key_values(p_tenant, p_kinds, p_values);
    RETURN QUERY
        SELECT p_kinds[m.key_index], m.holder
        FROM contact_key_matches(p_tenant, p_kinds, p_values, 2) AS m
        WHERE m.holder <> p_claimants[m.key_index]
        LIMIT 1;
END
$$;
