-- Waiting-list offers made $1 seconds ago or more and still open (the entry offered, its
-- hold live) whose mail was not sent, with no waitlist_offer outbox row that would send
-- it: the reconciler's candidates (it then looks for their message in Redis). $2 at
-- most this many, oldest first.
SELECT w.hold_id, w.id AS entry_id, w.event_id, w.offered_at
  FROM waitlist_entries w
  JOIN holds h ON h.id = w.hold_id AND h.status = 'held' AND h.expires_at > now()
 WHERE w.status = 'offered'
   AND w.offered_at < now() - make_interval(secs => $1)
   AND NOT EXISTS (SELECT FROM notifications n
                    WHERE n.hold_id = w.hold_id AND n.kind = 'waitlist_offer'
                      AND n.sent_at IS NOT NULL)
   AND NOT EXISTS (SELECT FROM outbox o
                    WHERE o.topic = 'confirmations' AND o.kind = 'waitlist_offer'
                      AND o.payload ->> 'hold_id' = w.hold_id::text)
 ORDER BY w.offered_at, w.hold_id
 LIMIT $2
