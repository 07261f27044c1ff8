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
    with pytest.raises(ConfigError):
        ProcessorSettings(window_us=7_000_000)  # must divide an hour
