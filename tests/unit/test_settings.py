"""The worker's settings (streams/host/settings.py), validated once."""

import pytest

from core.errors import ConfigError
from streams.contract import ProcessorSettings
from streams.host.settings import WorkerSettings
from warehouse.client import ClickHouseSettings

CH = ClickHouseSettings()


def test_worker_settings_are_validated_once():
    s = WorkerSettings(bootstrap="127.0.0.1:9092", topic="usage", clickhouse=CH)
    assert s.dlq_topic == "usage.dlq"
    with pytest.raises(ConfigError):
        WorkerSettings(bootstrap="127.0.0.1:9092", topic="bad topic", clickhouse=CH)
    with pytest.raises(ConfigError):
        WorkerSettings(bootstrap="b:1", topic="t", clickhouse=CH, heartbeat_interval_s=1.0)
    with pytest.raises(ConfigError, match="processing_threads"):
        WorkerSettings(bootstrap="b:1", topic="t", clickhouse=CH, processing_threads=0)
    for interval_s in (0.0, -1.0, 3601.0):
        with pytest.raises(ConfigError, match="snapshot_interval_s"):
            WorkerSettings(
                bootstrap="b:1", topic="t", clickhouse=CH, snapshot_interval_s=interval_s
            )
    with pytest.raises(ConfigError):
        ProcessorSettings(window_us=7_000_000)  # must divide an hour


def test_topics_are_created_with_the_replication_asked_for():
    """A production Kafka cluster keeps three copies of a topic, and an acknowledged report
    must be on two before the agent drops it from its spool (acks=all): the worker creates
    its topics that way when asked, with one copy only on a single broker (the default)."""
    from streams.host.topics import new_topics

    created = new_topics({"usage": 8, "usage.dlq": 1}, existing={"usage.dlq"}, replication=3)
    assert [(t.name, t.num_partitions, t.replication_factor) for t in created] == [("usage", 8, 3)]
    assert created[0].topic_configs["min.insync.replicas"] == "2"
    (single,) = new_topics({"usage": 8}, existing=set(), replication=1)
    assert single.replication_factor == 1 and "min.insync.replicas" not in single.topic_configs
    settings = WorkerSettings(
        bootstrap="k1:9092,k2:9092,k3:9092", topic="usage", clickhouse=CH, replication_factor=3
    )
    assert settings.replication_factor == 3
    with pytest.raises(ConfigError, match="replication_factor 0"):
        WorkerSettings(bootstrap="k:9092", topic="usage", clickhouse=CH, replication_factor=0)
