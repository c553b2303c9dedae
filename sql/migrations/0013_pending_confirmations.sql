-- The bookings still waiting for their confirmation mail, oldest first: what the
-- reconciler and `eventbook check` look for on every pass. Partial, so it holds only the
-- few bookings in flight, not every booking ever made.
CREATE INDEX bookings_pending_confirmation ON bookings (created_at, id)
    WHERE confirmation_status = 'pending';
