"""The worker creates its topics with the partition count it is given (the real broker)."""

from __future__ import annotations

import dataclasses

import pytest

from streams.host.settings import WorkerSettings
from streams.host.worker import prepare_topics
from warehouse.client import ClickHouseSettings

pytestmark = pytest.mark.integration


def test_the_worker_sizes_a_fresh_usage_topic_and_keeps_an_existing_one(stack, unique_name):
    name = unique_name.replace("_", "-")
    settings = WorkerSettings(
        bootstrap=stack.bootstrap,
        topic=f"sized-{name}",
        clickhouse=ClickHouseSettings(),
        partitions=8,
    )
    assert prepare_topics(settings) == {settings.topic: 8, settings.dlq_topic: 1}
    fewer = dataclasses.replace(settings, partitions=3)
    assert prepare_topics(fewer)[settings.topic] == 8  # never resized behind the operator


def test_an_unreachable_broker_is_one_clear_error_within_the_wait(tmp_path):
    """No server on the port: a MeterError naming the broker and the flag, not a traceback."""
    import socket
    import time

    from core.errors import MeterError
    from streams.host.topics import ensure_topics

    with socket.socket() as closed:  # a port that was free a moment ago
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(MeterError, match=rf"127\.0\.0\.1:{port}.*--bootstrap"):
        ensure_topics(f"127.0.0.1:{port}", {"usage": 1}, timeout_s=2.0)
    assert time.monotonic() - started < 15
