-- Room on each page of deliveries for the versions a claim writes (its lease), so that the
-- claim is a heap-only update: no new entry in any of the table's indexes.
ALTER TABLE deliveries SET (fillfactor = 70);
