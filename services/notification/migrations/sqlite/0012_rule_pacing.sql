-- A rule paces its emails to each user: its own digest window (its emails held and carried
-- by one digest per window) and an hourly cap (0: none for either). Each email keeps its
-- rule's pacing as it was made, as it keeps its category and criticality.
ALTER TABLE rules ADD COLUMN digest_window_minutes integer NOT NULL DEFAULT 0;
ALTER TABLE rules ADD COLUMN max_emails_per_hour integer NOT NULL DEFAULT 0;
ALTER TABLE emails ADD COLUMN digest_window_minutes integer NOT NULL DEFAULT 0;
ALTER TABLE emails ADD COLUMN max_emails_per_hour integer NOT NULL DEFAULT 0;
