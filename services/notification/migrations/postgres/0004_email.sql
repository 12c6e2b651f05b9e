-- Email: each rule's channels and email template, the emails the rules made (each (rule,
-- event, recipient) once, rendered when made), and each user's notification preferences
-- (where their email goes). The email worker claims every tenant's due emails and reads the
-- preferences of their users, so both tables also admit crm.all_tenants.

ALTER TABLE rules ADD COLUMN channels jsonb NOT NULL DEFAULT '["in_app"]';
ALTER TABLE rules ADD COLUMN email_template jsonb NOT NULL DEFAULT '{}';

CREATE TABLE emails (
    tenant_id         text        NOT NULL,
    id                uuid        NOT NULL,
    rule_id           uuid        NOT NULL,
    -- users/{id} or mailto:{address}.
    recipient         text        NOT NULL,
    -- The user of a users/ recipient, whose address is read from their preferences.
    user_id           text,
    -- The address of a mailto: recipient, or the one it was sent to.
    address           text        NOT NULL,
    event_id          text        NOT NULL,
    event_type        text        NOT NULL,
    subject           text        NOT NULL,
    text_body         text        NOT NULL,
    html_body         text        NOT NULL,
    state             text        NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'refused')),
    attempts          integer     NOT NULL DEFAULT 0,
    last_error        text        NOT NULL DEFAULT '',
    next_attempt_time timestamptz,
    lease_until       timestamptz,
    create_time       timestamptz NOT NULL,
    send_time         timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT emails_once UNIQUE (tenant_id, rule_id, event_id, recipient)
);
CREATE INDEX emails_due ON emails (next_attempt_time) WHERE state = 'pending';

CREATE TABLE notification_preferences (
    tenant_id     text        NOT NULL,
    user_id       text        NOT NULL,
    email_address text        NOT NULL,
    update_time   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['emails', 'notification_preferences'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO crm_notification_app', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')
            WITH CHECK (tenant_id = current_setting('crm.tenant_id', true) OR current_setting('crm.all_tenants', true) = 'on')$p$, t);
    END LOOP;
END
$$;
