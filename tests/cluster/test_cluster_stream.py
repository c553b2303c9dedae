"""The stream actor runtime on a Redis Cluster: claims, dead letters and forgotten
consumers each keep to the topic's slot."""

from tests.test_actors_stream import (  # noqa: F401
    concert,
    test_a_consumer_is_listed_from_its_start_before_any_message,
    test_a_message_left_by_a_killed_consumer_is_claimed_by_another_and_recorded_once,
    test_a_message_that_keeps_failing_is_dead_lettered_and_others_keep_flowing,
    test_consumers_of_gone_processes_are_forgotten_but_not_live_or_holding_ones,
    test_handled_messages_are_trimmed_so_the_stream_does_not_grow_forever,
)
