-- Email: each rule's channels, email template, category and criticality; the emails the rules
-- made (each (rule, event, recipient) once, rendered when made), held back or carried by a
-- digest as their users' preferences say; and each user's notification preferences (where
-- their email goes, time zone, quiet hours, digest, muted categories, hourly cap). The email
-- worker claims every tenant's due emails and reads the preferences of their users, so both
-- tables also admit crm.all_tenants.

ALTER TABLE rules ADD COLUMN channels jsonb NOT NULL DEFAULT '["in_app"]';
ALTER TABLE rules ADD COLUMN email_template jsonb NOT NULL DEFAULT '{}';
ALTER TABLE rules ADD COLUMN category text NOT NULL DEFAULT 'general';
ALTER TABLE rules ADD COLUMN critical boolean NOT NULL DEFAULT false;

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
    -- The rule's category (what a user may mute) and whether it is critical (sent whatever
    -- the user's quiet hours, digest or cap).
    category          text        NOT NULL,
    critical          boolean     NOT NULL,
    state             text        NOT NULL
        CHECK (state IN ('pending', 'sent', 'failed', 'refused', 'held', 'digested')),
    -- Why a held email is held: quiet_hours (claimed again when they end), digest or cap
    -- (carried by a digest email when their time comes).
    held_for          text,
    -- The digest email that carried a digested one.
    digest_id         uuid,
    attempts          integer     NOT NULL DEFAULT 0,
    last_error        text        NOT NULL DEFAULT '',
    next_attempt_time timestamptz,
    lease_until       timestamptz,
    create_time       timestamptz NOT NULL,
    send_time         timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT emails_once UNIQUE (tenant_id, rule_id, event_id, recipient)
);
CREATE INDEX emails_due ON emails (next_attempt_time) WHERE state IN ('pending', 'held');
CREATE INDEX emails_sent ON emails (tenant_id, user_id, send_time) WHERE state = 'sent';

CREATE TABLE notification_preferences (
    tenant_id     text        NOT NULL,
    user_id       text        NOT NULL,
    email_address text        NOT NULL,
    -- Time zone, quiet hours, digest, muted categories, hourly cap.
    settings      jsonb       NOT NULL DEFAULT '{}',
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
