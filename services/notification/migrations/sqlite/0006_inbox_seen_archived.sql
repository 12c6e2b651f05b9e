-- Seen and archived notifications (see the PostgreSQL migration).
ALTER TABLE notifications ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox_counts ADD COLUMN unseen INTEGER NOT NULL DEFAULT 0 CHECK (unseen >= 0);
UPDATE inbox_counts SET unseen = (
    SELECT count(*) FROM notifications n
    WHERE n.tenant_id = inbox_counts.tenant_id AND n.user_id = inbox_counts.user_id AND NOT n.seen
);
CREATE INDEX notifications_unseen ON notifications (tenant_id, user_id, id) WHERE NOT seen;
