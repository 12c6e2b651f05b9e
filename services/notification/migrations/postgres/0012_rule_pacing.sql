-- A rule paces its emails to each user: its own digest window (its emails held and carried
-- by one digest per window) and an hourly cap (0: none for either).
ALTER TABLE rules ADD COLUMN digest_window_minutes integer NOT NULL DEFAULT 0;
ALTER TABLE rules ADD COLUMN max_emails_per_hour integer NOT NULL DEFAULT 0;
-- The email worker claims every tenant's emails and reads their rules' pacing with them: the
-- rules may be read (not written) with crm.all_tenants, as the emails are.
CREATE POLICY all_tenants_read ON rules FOR SELECT USING (current_setting('crm.all_tenants', true) = 'on');
