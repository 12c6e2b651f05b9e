-- The full-text index rebuilt so a search reads only what it returns.
--
-- A token of the contact's tenant ('t' and the hex of its id) in a column of its own: a
-- search matches it with its words, so the index yields that tenant's contacts only and other
-- tenants' matches are never visited. Prefixes of one to three characters are indexed too: a
-- short prefix ("y") is then one list rather than a merge of every word starting with it.
DROP TRIGGER contacts_fts_insert;
DROP TRIGGER contacts_fts_update;
DROP TRIGGER contacts_fts_delete;
DROP TABLE contacts_fts;

CREATE VIRTUAL TABLE contacts_fts USING fts5(tenant, doc, tokenize = 'unicode61 remove_diacritics 2', prefix = '1 2 3');
-- Deleting a row takes its words out of the index at once rather than at a later merge, so
-- an erased contact's words leave the database file with it.
INSERT INTO contacts_fts (contacts_fts, rank) VALUES ('secure-delete', 1);
CREATE TRIGGER contacts_fts_insert AFTER INSERT ON contacts BEGIN
    INSERT INTO contacts_fts (rowid, tenant, doc)
    VALUES (new.rowid, 't' || hex(new.tenant_id), new.search_text || ' ' || coalesce(new.company_name, ''));
END;
CREATE TRIGGER contacts_fts_update AFTER UPDATE OF search_text, company_name ON contacts BEGIN
    DELETE FROM contacts_fts WHERE rowid = old.rowid;
    INSERT INTO contacts_fts (rowid, tenant, doc)
    VALUES (new.rowid, 't' || hex(new.tenant_id), new.search_text || ' ' || coalesce(new.company_name, ''));
END;
CREATE TRIGGER contacts_fts_delete AFTER DELETE ON contacts BEGIN
    DELETE FROM contacts_fts WHERE rowid = old.rowid;
END;

INSERT INTO contacts_fts (rowid, tenant, doc)
SELECT rowid, 't' || hex(tenant_id), search_text || ' ' || coalesce(company_name, '') FROM contacts;
