-- A notification is seen (the user opened their inbox since it came) and may be archived
-- (out of the inbox, read and seen); each user's unseen count is kept beside the unread one.
-- Every change of an inbox is announced on crm_inbox ('{tenant}/{user}'), so a replica
-- streaming that user's inbox hears of a change made on another.
ALTER TABLE notifications ADD COLUMN seen boolean NOT NULL DEFAULT false;
ALTER TABLE notifications ADD COLUMN archived boolean NOT NULL DEFAULT false;
ALTER TABLE inbox_counts ADD COLUMN unseen bigint NOT NULL DEFAULT 0 CHECK (unseen >= 0);
UPDATE inbox_counts c SET unseen = (
    SELECT count(*) FROM notifications n WHERE n.tenant_id = c.tenant_id AND n.user_id = c.user_id AND NOT n.seen
);
CREATE INDEX notifications_unseen ON notifications (tenant_id, user_id, id) WHERE NOT seen;
