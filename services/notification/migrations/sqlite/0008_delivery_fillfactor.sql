-- Numbered as the PostgreSQL migration that gives deliveries' pages room for heap-only
-- updates; SQLite pages have no such setting, so nothing changes here.
SELECT 1;
