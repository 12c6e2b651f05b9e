-- Writers notify the sequencer only when no sequencer is polling. PostgreSQL serialises the
-- commits of transactions that sent NOTIFY (a database-wide lock held from before the commit
-- record to the end of the transaction, so their WAL flushes never group together): with a
-- notification in every write, a service's writes were capped, and a busy outbox paid it on
-- every commit (pgbench on two cores: 3.4k-3.7k transactions a second with pg_notify, against
-- 10k-13k without).
--
-- A sequencer that numbered events keeps looking for more every few milliseconds for a short
-- window, and says until when in outbox_polling (crm_platform::outbox, POLL_WINDOW), extending
-- it from the rounds that find events; it only stops after a round begun past it. A writer
-- that sees the window open at the end of its transaction does not notify. A writer that
-- lingers past the window between that check and its commit is numbered by the sequencer's
-- periodic round (SAFETY_TICK) at the latest: later, never lost.
--
-- A row of its own, rewritten only when the window is half gone: every writer reads it, and
-- outbox_head's row gets a new version at every sequencing round.
CREATE TABLE IF NOT EXISTS outbox_polling (
    only_row     boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    polled_until timestamptz NOT NULL
);
INSERT INTO outbox_polling (polled_until) VALUES ('-infinity') ON CONFLICT DO NOTHING;
GRANT SELECT, UPDATE ON outbox_polling TO {app_role};

CREATE OR REPLACE FUNCTION outbox_append(
    p_tenants text[], p_ids uuid[], p_types text[], p_subjects text[], p_times timestamptz[],
    p_actors text[], p_traceparents text[], p_payloads jsonb[])
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF cardinality(p_ids) > 0 THEN
        INSERT INTO outbox_events (tenant_id, id, type, subject, time, actor, traceparent, payload, format)
        SELECT e.tenant_id, e.id, e.type, e.subject, e.time, e.actor, e.traceparent, e.payload, 1
        FROM unnest(p_tenants, p_ids, p_types, p_subjects, p_times, p_actors, p_traceparents, p_payloads)
             AS e(tenant_id, id, type, subject, time, actor, traceparent, payload);
        IF (SELECT polled_until FROM outbox_polling) <= clock_timestamp() THEN
            PERFORM pg_notify('crm_outbox', '');
        END IF;
    END IF;
END
$$;
