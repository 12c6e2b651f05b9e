-- Numbered as the PostgreSQL migration that orders the due deliveries by (due time, id) for
-- claims that go on from the previous one; claims here are one writer's, so nothing changes.
SELECT 1;
