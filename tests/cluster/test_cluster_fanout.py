"""The fan-out of event changes to every attendee, on a Redis Cluster."""

from tests.test_fanout import (  # noqa: F401
    test_a_cancelled_event_tells_every_attendee_it_is_cancelled,
    test_attendees_of_a_page_given_up_on_are_counted_failed_and_a_replay_tells_them,
    test_quick_changes_during_a_fanout_coalesce_to_the_newest,
)
