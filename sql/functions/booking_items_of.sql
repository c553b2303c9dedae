-- What a booking holds, as its API representation shows it: one object per ticket type,
-- {ticket_type_id, name, quantity, price_cents}, in the order of the types' creation.

CREATE OR REPLACE FUNCTION booking_items_of(p_booking uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'ticket_type_id', i.ticket_type_id, 'name', t.name,
               'quantity', i.quantity, 'price_cents', i.price_cents)
               ORDER BY t.created_at, t.id), '[]')
      FROM booking_items i JOIN ticket_types t ON t.id = i.ticket_type_id
     WHERE i.booking_id = p_booking
$$;
