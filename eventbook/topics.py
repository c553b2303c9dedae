"""The topics of the actors' work. A topic names, all at once: the `topic` column of the
outbox rows the stored procedures write (sql/ spells these words too; tests/test_topics.py
checks that they agree), the Redis stream `{topic}:stream` the relay moves them to, with
its dead letters, and the stream actor (and its consumer group) that reads it. Operators
and stored data depend on these words: they never change."""

from __future__ import annotations

# Booking confirmed or cancelled: one mail to its customer.
CONFIRMATIONS = "confirmations"
# An event changed or was cancelled: one mail to each of its attendees.
NOTIFICATIONS = "notifications"

# A booking, hold or event changed and its organizer has a webhook endpoint that wants
# it: one delivery per such endpoint.
WEBHOOKS = "webhooks"

TOPICS: tuple[str, ...] = (CONFIRMATIONS, NOTIFICATIONS, WEBHOOKS)
