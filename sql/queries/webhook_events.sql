-- Events $1 as the API shows them: the data of their webhooks.
SELECT id, organizer_id, title, description, venue, starts_at, ends_at, capacity,
       available_tickets, max_tickets_per_booking, max_tickets_per_customer, status,
       version, created_at, updated_at, currency
  FROM events
 WHERE id = ANY ($1::uuid[])
