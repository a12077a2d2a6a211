"""flashwire.workers.outage: which Redis errors the worker waits out as an outage."""

from __future__ import annotations


def test_a_connection_lost_while_watching_is_an_outage_for_the_worker() -> None:
    """redis-py reports a connection lost during arq's WATCH (enqueue_job) as a WatchError; the worker's
    parts must wait it out like any lost connection, not log it as an unexpected error."""
    from redis.exceptions import WatchError

    from flashwire.workers.outage import REDIS_DOWN

    assert isinstance(WatchError("A ConnectionError occurred on while watching one or more keys"), REDIS_DOWN)
