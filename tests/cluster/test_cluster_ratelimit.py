"""The rate limiter on a Redis Cluster: its pipelined scripts reach each key's node."""

from tests.test_ratelimit import (  # noqa: F401
    limiter,
    test_lost_scripts_are_loaded_again,
    test_simultaneous_hits_on_one_subject_let_exactly_the_limit_through,
    test_subjects_hit_together_are_counted_apart,
    test_the_window_starts_again_after_it_expires,
)
