-- Search through an inverted index kept in a B-tree.
--
-- Under row-level security PostgreSQL evaluates the tenant policy before any operator that
-- is not LEAKPROOF, and no full-text operator (@@) is: a GIN index on the tsvector is never
-- used by the serving role, so every search scanned the whole table. Comparisons of text
-- are leakproof, so the lexemes of each contact's search document are kept here, one row
-- per (term, contact), in byte order ("C"), where a prefix is a range of the primary key.
-- Like contact_keys, a derived index of the contacts table rather than a fact of its own: it
-- is kept by the statement triggers below (one set-based statement per write statement,
-- where a foreign key would check and cascade row by row).
CREATE TABLE contact_terms (
    tenant_id  text NOT NULL,
    term       text COLLATE "C" NOT NULL,
    contact_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, term, contact_id)
);
ALTER TABLE contact_terms ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_terms FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contact_terms
    USING (tenant_id = current_setting('crm.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true));
GRANT SELECT, INSERT, DELETE ON contact_terms TO crm_contact_app;

-- The terms follow the search document on every write path (create, update, import, merge,
-- erase, a company rename), so no writer can forget them; a deleted contact's terms and match
-- keys go with it.
CREATE FUNCTION contact_terms_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_terms (tenant_id, term, contact_id)
    SELECT n.tenant_id, t, n.id FROM new_rows AS n, unnest(tsvector_to_array(n.search_doc)) AS t;
    RETURN NULL;
END
$$;
CREATE FUNCTION contact_terms_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM contact_terms AS t USING (
        SELECT o.tenant_id, o.id, unnest(tsvector_to_array(o.search_doc)) AS term
        FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
        WHERE n.search_doc IS DISTINCT FROM o.search_doc) AS d
    WHERE t.tenant_id = d.tenant_id AND t.term = d.term COLLATE "C" AND t.contact_id = d.id;
    INSERT INTO contact_terms (tenant_id, term, contact_id)
    SELECT n.tenant_id, t, n.id FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id,
           unnest(tsvector_to_array(n.search_doc)) AS t
    WHERE n.search_doc IS DISTINCT FROM o.search_doc;
    RETURN NULL;
END
$$;
CREATE FUNCTION contact_index_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM contact_terms AS t USING (
        SELECT o.tenant_id, o.id, unnest(tsvector_to_array(o.search_doc)) AS term FROM old_rows AS o) AS d
    WHERE t.tenant_id = d.tenant_id AND t.term = d.term COLLATE "C" AND t.contact_id = d.id;
    DELETE FROM contact_keys AS k USING old_rows AS o WHERE k.tenant_id = o.tenant_id AND k.contact_id = o.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER contact_terms_insert AFTER INSERT ON contacts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contact_terms_insert();
CREATE TRIGGER contact_terms_update AFTER UPDATE ON contacts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contact_terms_update();
CREATE TRIGGER contact_index_delete AFTER DELETE ON contacts
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION contact_index_delete();

-- The match keys are such an index too: the trigger above removes them with their contact,
-- and the store writes them with it, so the per-row foreign-key check goes.
ALTER TABLE contact_keys DROP CONSTRAINT contact_keys_tenant_id_contact_id_fkey;

INSERT INTO contact_terms (tenant_id, term, contact_id)
SELECT tenant_id, t, id FROM contacts, unnest(tsvector_to_array(search_doc)) AS t;

-- Never used under row-level security (see above); it only cost every write.
DROP INDEX contacts_search;

-- Two more indexes no serving query can use: array containment (@>) is not leakproof either,
-- and no query looks contacts up by lower(primary_email) (email lookups go through
-- contact_keys). They only cost every write.
DROP INDEX contacts_tags;
DROP INDEX contacts_primary_email;
