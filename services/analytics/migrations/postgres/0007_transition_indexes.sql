-- The closes and the stays are kept at ingest (deal_closes, deal_stays and their sums), and the
-- metrics read a period's closes and entries from them: nothing reads the transitions by time
-- and kind any more, and every transition ingested paid for one of these two indexes.
DROP INDEX deal_transitions_closes;
DROP INDEX deal_transitions_entries;
