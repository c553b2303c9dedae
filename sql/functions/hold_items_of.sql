-- What a hold holds, in the same shape as booking_items_of.

CREATE OR REPLACE FUNCTION hold_items_of(p_hold uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'ticket_type_id', i.ticket_type_id, 'name', t.name,
               'quantity', i.quantity, 'price_cents', i.price_cents)
               ORDER BY t.created_at, t.id), '[]')
      FROM hold_items i JOIN ticket_types t ON t.id = i.ticket_type_id
     WHERE i.hold_id = p_hold
$$;
