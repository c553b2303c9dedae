"""The outbox relay on a Redis Cluster: one step per topic (its slot), and a row leaves
the outbox only once its topic's stream took it."""

from tests.test_actors_relay import (  # noqa: F401
    test_a_topic_redis_refuses_stays_in_the_outbox_and_the_others_go_once,
    test_several_relays_move_every_row_exactly_once,
    test_the_relay_wakes_on_notify_without_waiting_for_its_poll,
)
