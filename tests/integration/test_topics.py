"""The worker creates its topics with the partition count it is given (the real broker)."""

from __future__ import annotations

import dataclasses

import pytest

from streams.settings import WorkerSettings
from streams.worker import prepare_topics
from warehouse.client import ClickHouseSettings

pytestmark = pytest.mark.integration


def test_the_worker_sizes_a_fresh_usage_topic_and_keeps_an_existing_one(stack, unique_name):
    name = unique_name.replace("_", "-")
    settings = WorkerSettings(
        bootstrap=stack.bootstrap, topic=f"sized-{name}", clickhouse=ClickHouseSettings(),
        partitions=8,
    )  # fmt: skip
    assert prepare_topics(settings) == {settings.topic: 8, settings.dlq_topic: 1}
    fewer = dataclasses.replace(settings, partitions=3)
    assert prepare_topics(fewer)[settings.topic] == 8  # never resized behind the operator
