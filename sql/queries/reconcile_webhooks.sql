-- Changes made between $2 and $1 seconds ago that an endpoint of their organizer wants
-- (made before the change; its types, and its events when it names some, match), with
-- no delivery to that endpoint and no webhooks outbox row that would make it: the
-- reconciler's candidates (it then looks for their message in Redis). The changes are
-- those the stored procedures write a webhooks row for: bookings made, bookings
-- cancelled by their customer, holds expired, and the event changes announced to
-- attendees (an event.updated not announced, such as a new capacity, is not looked
-- for). Each comes with its webhook-id (as eventbook.webhook_payloads names it), its
-- outbox payload, and one endpoint that misses it. $3 at most this many, oldest first.
-- Only the events of organizers with endpoints are read, each through an index on
-- (event, time).
WITH watched AS (
    SELECT e.id AS event_id
      FROM events e
     WHERE e.organizer_id IN (SELECT w.organizer_id FROM webhook_endpoints w)
), bounds AS (
    SELECT now() - make_interval(secs => $2) AS since,
           now() - make_interval(secs => $1) AS upto
), changes AS (
    SELECT 'booking.created' AS kind, b.event_id, b.created_at AS changed_at,
           b.id::text AS object_id, NULL::integer AS version
      FROM watched x CROSS JOIN bounds
      JOIN bookings b ON b.event_id = x.event_id
                     AND b.created_at >= bounds.since AND b.created_at < bounds.upto
    UNION ALL
    SELECT 'booking.cancelled', b.event_id, b.cancelled_at, b.id::text, NULL
      FROM watched x CROSS JOIN bounds
      JOIN bookings b ON b.event_id = x.event_id AND b.cancel_reason = 'customer'
                     AND b.cancelled_at >= bounds.since AND b.cancelled_at < bounds.upto
    UNION ALL
    SELECT 'hold.expired', h.event_id, h.ended_at, h.id::text, NULL
      FROM watched x CROSS JOIN bounds
      JOIN holds h ON h.event_id = x.event_id AND h.status = 'expired'
                  AND h.ended_at >= bounds.since AND h.ended_at < bounds.upto
    UNION ALL
    SELECT CASE a.kind WHEN 'event_cancelled' THEN 'event.cancelled'
                       ELSE 'event.updated' END,
           a.event_id, a.changed_at, a.event_id::text, a.version
      FROM watched x CROSS JOIN bounds
      JOIN announcements a ON a.event_id = x.event_id
                          AND a.changed_at >= bounds.since AND a.changed_at < bounds.upto
), named AS (
    SELECT c.*, e.organizer_id,
           'msg_' || c.kind || '_' || c.object_id
               || coalesce('_' || c.version, '') AS message_id,
           CASE WHEN c.kind LIKE 'booking.%' THEN jsonb_build_object('booking_id', c.object_id)
                WHEN c.kind = 'hold.expired' THEN jsonb_build_object('hold_id', c.object_id)
                ELSE jsonb_build_object('event_id', c.object_id, 'version', c.version)
           END AS payload
      FROM changes c JOIN events e ON e.id = c.event_id
)
SELECT n.kind, n.event_id, n.changed_at, n.message_id, n.payload, m.endpoint_id
  FROM named n
 CROSS JOIN LATERAL (
    SELECT w.id AS endpoint_id
      FROM webhook_endpoints w
     WHERE w.organizer_id = n.organizer_id
       AND (n.kind = ANY (w.event_types) OR '*' = ANY (w.event_types))
       AND (w.event_ids IS NULL OR n.event_id = ANY (w.event_ids))
       AND w.created_at <= n.changed_at
       AND NOT EXISTS (SELECT FROM webhook_deliveries d
                        WHERE d.endpoint_id = w.id AND d.message_id = n.message_id)
     LIMIT 1) m
 WHERE NOT EXISTS (SELECT FROM outbox o
                    WHERE o.topic = 'webhooks' AND o.kind = n.kind
                      AND o.payload = n.payload)
 ORDER BY n.changed_at, n.message_id
 LIMIT $3
