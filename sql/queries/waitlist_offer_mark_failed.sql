-- An offer mail given up on after its retries: recorded, so it is counted and not resent
-- (the offer itself stands until its hold runs out).
UPDATE notifications SET failed_at = now()
 WHERE hold_id = $1 AND kind = 'waitlist_offer' AND sent_at IS NULL AND failed_at IS NULL
