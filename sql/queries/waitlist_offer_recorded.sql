SELECT id, recipient, subject, body, sent_at FROM notifications
 WHERE hold_id = $1 AND kind = 'waitlist_offer'
