-- The booking (p_hold false) or hold a customer's Idempotency-Key already names, with
-- the fingerprint of the request that made it; no row when the key is unused.
CREATE OR REPLACE FUNCTION taken_by_key(p_hold boolean, p_user uuid, p_key text)
RETURNS TABLE (id uuid, request_fingerprint text)
LANGUAGE sql STABLE AS $$
    SELECT b.id, b.request_fingerprint FROM bookings b
     WHERE NOT p_hold AND b.user_id = p_user AND b.idempotency_key = p_key
    UNION ALL
    SELECT h.id, h.request_fingerprint FROM holds h
     WHERE p_hold AND h.user_id = p_user AND h.idempotency_key = p_key
$$;
