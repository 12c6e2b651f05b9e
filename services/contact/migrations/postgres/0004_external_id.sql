-- The id of a contact in another system; unique per tenant through contact_keys (kind
-- 'external'), which the service writes with every contact change.
ALTER TABLE contacts ADD COLUMN external_id text;
