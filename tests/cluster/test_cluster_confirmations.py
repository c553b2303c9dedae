"""Bookings confirmed end to end (relay, stream, actor, mail) on a Redis Cluster."""

from tests.test_actors_confirmations import (  # noqa: F401
    concert,
    test_a_booking_is_answered_at_once_and_the_slow_mail_follows,
    test_a_cancelled_booking_gets_a_cancellation_mail_too,
)
