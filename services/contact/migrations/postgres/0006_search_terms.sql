-- Search through an inverted index kept in a B-tree.
--
-- Under row-level security PostgreSQL evaluates the tenant policy before any operator that
-- is not LEAKPROOF, and no full-text operator (@@) is: a GIN index on the tsvector is never
-- used by the serving role, so every search scanned the whole table. Comparisons of text
-- are leakproof, so the lexemes of each contact's search document are kept here, one row
-- per (term, contact), in byte order ("C"), where a prefix is a range of the primary key.
CREATE TABLE contact_terms (
    tenant_id  text NOT NULL,
    term       text COLLATE "C" NOT NULL,
    contact_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, term, contact_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
-- Whether a candidate also has the other words of a query: one probe per candidate.
CREATE INDEX contact_terms_contact ON contact_terms (tenant_id, contact_id, term);

ALTER TABLE contact_terms ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_terms FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contact_terms
    USING (tenant_id = current_setting('crm.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true));
GRANT SELECT, INSERT, DELETE ON contact_terms TO crm_contact_app;

-- The terms follow the search document on every write path (create, update, import, merge,
-- erase, a company rename), so no writer can forget them.
CREATE FUNCTION contact_terms_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.search_doc IS NOT DISTINCT FROM OLD.search_doc THEN
            RETURN NULL;
        END IF;
        DELETE FROM contact_terms WHERE tenant_id = OLD.tenant_id AND contact_id = OLD.id;
    END IF;
    INSERT INTO contact_terms (tenant_id, term, contact_id)
    SELECT NEW.tenant_id, t, NEW.id FROM unnest(tsvector_to_array(NEW.search_doc)) AS t;
    RETURN NULL;
END
$$;
CREATE TRIGGER contact_terms_sync AFTER INSERT OR UPDATE OF search_text, company_name ON contacts
    FOR EACH ROW EXECUTE FUNCTION contact_terms_sync();

INSERT INTO contact_terms (tenant_id, term, contact_id)
SELECT tenant_id, t, id FROM contacts, unnest(tsvector_to_array(search_doc)) AS t;

-- Never used under row-level security (see above); it only cost every write.
DROP INDEX contacts_search;
