-- The members of each tenant and their roles (see the PostgreSQL migration); last_seen is
-- `YYYY-MM-DD`.
CREATE TABLE members (
    tenant_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    roles     TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
