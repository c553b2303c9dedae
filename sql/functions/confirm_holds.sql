-- Confirms several holds in one call and one commit: each as confirm_hold alone would,
-- in the order given, each with its own outcome (row n answers the n-th hold).
--
-- Why one commit for many: every confirmation writes an outbox row, whose trigger
-- NOTIFYs the relay, and PostgreSQL commits NOTIFYing transactions one at a time (a
-- cluster-wide lock taken before the commit and held until its WAL is flushed). One
-- confirmation per transaction is so capped near 1 / WAL flush, whatever the server
-- and however many events; confirmations that arrive together share the lock and the
-- flush, as bookings do in book_tickets.
--
-- p_lock_timeout bounds the wait for a lock (an event locked FOR UPDATE by its
-- organizer's change, a hold in a release's hands) for the rest of the caller's
-- transaction; NULL: no bound. The server sends a batch with a short bound and decides
-- each of its holds alone, unbounded, when it fails.

CREATE OR REPLACE FUNCTION confirm_holds(
    p_holds uuid[], p_users uuid[], p_payment_references text[], p_request_ids text[],
    p_lock_timeout text
) RETURNS TABLE (n integer, outcome text, booking bookings, items jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF coalesce(cardinality(p_users), 0) <> coalesce(cardinality(p_holds), 0)
       OR coalesce(cardinality(p_payment_references), 0) <> coalesce(cardinality(p_holds), 0)
       OR coalesce(cardinality(p_request_ids), 0) <> coalesce(cardinality(p_holds), 0) THEN
        RAISE EXCEPTION 'confirm_holds: the arrays do not match';
    END IF;
    IF p_lock_timeout IS NOT NULL THEN
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_holds), 0) LOOP
        RETURN QUERY
        SELECT i, c.outcome, c.booking, c.items
          FROM confirm_hold(p_holds[i], p_users[i], p_payment_references[i],
                            p_request_ids[i]) c;
    END LOOP;
END $$;
