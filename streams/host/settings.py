"""Worker configuration, validated once when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError
from core.identity import check_topic
from streams.contract import ProcessorSettings
from warehouse.client import ClickHouseSettings

# The largest message the pipeline takes whole, at every step: the topics' own limit
# (``max.message.bytes``, set when ensure_topics creates them), the worker's fetch per
# partition and the dead-letter producer (plus DLQ_HEADROOM_BYTES for the headers). The
# agent's producer stays far below it (agent/sender.py). A broker without a limit of its own
# (the local one) can deliver larger messages: they are metered like any other, and a
# rejected one is dead-lettered as a stub (streams/output/dlq.py).
MAX_MESSAGE_BYTES = 16 << 20
DLQ_HEADROOM_BYTES = 64 << 10


@dataclass(frozen=True)
class WorkerSettings:
    bootstrap: str
    topic: str
    clickhouse: ClickHouseSettings
    app_id: str = "gpu-meter"
    partitions: int = 8
    # Copies of each topic the worker creates: 1 on a single broker, 3 on a production
    # Kafka cluster (streams/host/topics.py). An existing topic keeps its own.
    replication_factor: int = 1
    dlq_topic: str = ""  # default: "<topic>.dlq"
    batch_max_messages: int = 5_000
    batch_within_s: float = 0.5
    # Partitions of a batch are processed this many at a time (the compiled kernels release
    # the GIL); each partition's state is still touched by one thread at a time.
    processing_threads: int = 2
    # A partition's whole state is stored with its first batch, then at most this often
    # (one partition a batch): storing it costs tens of times what processing a batch does
    # (docs/PERFORMANCE.md, "Freshness"). After a crash, up to about this much of the
    # partition is read again; it rewrites identical rows (streams/EXACTLY_ONCE.md).
    snapshot_interval_s: float = 10.0
    processor: ProcessorSettings = field(default_factory=ProcessorSettings)
    datadir: Path = Path(".stack/faust")
    # From docs/BROKER.md: the local broker holds JoinGroup for half the session timeout,
    # so a short one makes a worker ready in ~3 s instead of ~30 s.
    session_timeout_s: float = 2.0
    heartbeat_interval_s: float = 0.5
    hot_path: bool = True  # False: the readable twin (fastavro + dicts), e.g. to compare
    metrics_port: int | None = None  # Prometheus /metrics on this port; None: no web server
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for name in ("topic", "app_id"):
            check_topic(getattr(self, name), name)
        if not self.dlq_topic:
            object.__setattr__(self, "dlq_topic", f"{self.topic}.dlq")
        check_topic(self.dlq_topic, "dlq_topic")
        if not self.bootstrap or " " in self.bootstrap:
            raise ConfigError(f"bootstrap {self.bootstrap!r} must be host:port[,host:port]")
        if self.partitions < 1 or self.batch_max_messages < 1 or self.batch_within_s <= 0:
            raise ConfigError("partitions, batch size and batch wait must be positive")
        if not 1 <= self.replication_factor <= 32:
            raise ConfigError(
                f"replication_factor {self.replication_factor} must be 1..32 (copies of each "
                "topic: 1 on a single broker, 3 on a production cluster)"
            )
        if not 0 < self.snapshot_interval_s <= 3600:
            raise ConfigError(
                f"snapshot_interval_s {self.snapshot_interval_s} must be above 0 and at most "
                "3600 (seconds between stores of a partition's whole state)"
            )
        if not 1 <= self.processing_threads <= 64:
            raise ConfigError(f"processing_threads {self.processing_threads} must be 1..64")
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ConfigError("heartbeat interval must be at most a third of the session timeout")
