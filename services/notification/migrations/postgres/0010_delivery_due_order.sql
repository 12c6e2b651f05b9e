-- The due deliveries in a total order, (due time, id), so that a worker's claims go on from
-- where its previous claim ended instead of scanning again past everything it just claimed.
CREATE INDEX deliveries_due_order ON deliveries (next_attempt_time, id) WHERE state = 'pending';
DROP INDEX deliveries_due;
