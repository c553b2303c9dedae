-- Put the waitlist_offer message of offers back in the outbox, as offer_waitlist writes
-- it. $1 their holds, $2 the request id of each. An offer ended (confirmed, released,
-- expired) or mailed since it was found is skipped: the check and the insert are one
-- statement.
INSERT INTO outbox (topic, kind, payload, request_id)
SELECT 'confirmations', 'waitlist_offer',
       jsonb_build_object('hold_id', w.hold_id, 'entry_id', w.id), r.request_id
  FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS r (hold_id, request_id, n)
  JOIN waitlist_entries w ON w.hold_id = r.hold_id
  JOIN holds h ON h.id = w.hold_id
 WHERE w.status = 'offered' AND h.status = 'held'
   AND NOT EXISTS (SELECT FROM notifications x
                    WHERE x.hold_id = w.hold_id AND x.kind = 'waitlist_offer'
                      AND x.sent_at IS NOT NULL)
 ORDER BY r.n
RETURNING (payload ->> 'hold_id')::uuid AS hold_id, request_id
