-- All tickets are available at first: $7 is both the capacity and the tickets left. The
-- trigger default_ticket_type gives the event its free ticket type.
INSERT INTO events (organizer_id, title, description, venue, starts_at, ends_at,
                    capacity, available_tickets, max_tickets_per_booking,
                    max_tickets_per_customer, currency)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10)
RETURNING id, organizer_id, title, description, venue, starts_at, ends_at, capacity,
          available_tickets, max_tickets_per_booking, max_tickets_per_customer, status,
          version, created_at, updated_at, currency
