-- Waiting-list entries by status, and how many of them got an offer. Entries are never
-- deleted and an entry keeps its offer once made, so the offers, and the entries that
-- ended accepted, expired or declined, only grow. An index-only scan of
-- waitlist_by_status once the table is vacuumed: no row of the table is read.
SELECT status, count(*)::bigint AS entries, count(offered_at)::bigint AS offers
  FROM waitlist_entries
 GROUP BY status
