-- Each user's unread notifications, kept with every change of the inbox.
CREATE TABLE inbox_counts (
    tenant_id TEXT    NOT NULL,
    user_id   TEXT    NOT NULL,
    unread    INTEGER NOT NULL CHECK (unread >= 0),
    PRIMARY KEY (tenant_id, user_id)
);
INSERT INTO inbox_counts (tenant_id, user_id, unread)
SELECT tenant_id, user_id, count(*) FROM notifications WHERE read = 0 GROUP BY tenant_id, user_id;
