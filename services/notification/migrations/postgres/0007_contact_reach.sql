-- What email may reach each contact, kept from the contact feed in the transaction that moves
-- its checkpoint: the contact's primary address and whether they consented to email. An email
-- to a contact (a rule's `contact` recipient) is sent only with that consent; without it, it
-- is refused with the reason.
CREATE TABLE contact_reach (
    tenant_id     text        NOT NULL,
    contact       text        NOT NULL,
    email_address text        NOT NULL DEFAULT '',
    email_consent boolean     NOT NULL DEFAULT false,
    update_time   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, contact)
);
ALTER TABLE contact_reach ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_reach FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contact_reach
    USING (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')
    WITH CHECK (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on');
GRANT SELECT, INSERT, UPDATE, DELETE ON contact_reach TO crm_notification_app;
-- The contact an email to a contact goes to (`contacts/{id}`).
ALTER TABLE emails ADD COLUMN contact text;
