-- Numbered as the PostgreSQL migration that keeps the pending deliveries in a queue table of
-- their own (so that an outcome's update touches no index there); here one writer claims,
-- and the deliveries' partial index stays the queue.
SELECT 1;
