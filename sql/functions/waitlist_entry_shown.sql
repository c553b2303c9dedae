-- A waiting-list entry as its customer sees it. position is its place among the type's
-- waiting entries (1: next), while it waits; an offer past its expires_at is shown
-- expired, as a confirmation would find it, even before the holds actor has moved its
-- tickets on.

CREATE OR REPLACE FUNCTION waitlist_entry_shown(w waitlist_entries)
RETURNS TABLE (
    id uuid, event_id uuid, ticket_type_id uuid, quantity integer, status text,
    "position" bigint, hold_id uuid, offer_expires_at timestamptz, created_at timestamptz,
    offered_at timestamptz, ended_at timestamptz
)
LANGUAGE sql STABLE AS $$
    SELECT w.id, w.event_id, w.ticket_type_id, w.quantity,
           CASE WHEN w.status = 'offered' AND h.expires_at <= now() THEN 'expired'
                ELSE w.status END,
           CASE WHEN w.status = 'waiting'
                THEN (SELECT count(*) FROM waitlist_entries x
                       WHERE x.ticket_type_id = w.ticket_type_id AND x.status = 'waiting'
                         AND x.seq < w.seq) + 1 END,
           w.hold_id, h.expires_at, w.created_at, w.offered_at, w.ended_at
      FROM (SELECT) one
      LEFT JOIN holds h ON h.id = w.hold_id
$$;
