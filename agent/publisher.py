"""Publishing framed reports to Kafka with kafka-python, ``acks=all``, keyed by node.

The publisher remembers the highest acknowledged offset per partition, so a caller knows
exactly how far a consumer must get to have seen everything (the local broker's
ListOffsets is unreliable, see docs/BROKER.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from agent.errors import PublishError


class ReportPublisher:
    def __init__(self, bootstrap: str, topic: str, **producer_config: Any) -> None:
        self.topic = topic
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "linger_ms": 5,
            "batch_size": 256 * 1024,
            "retries": 10,
            # One request in flight keeps a node's reports in seq order through retries.
            "max_in_flight_requests_per_connection": 1,
            "request_timeout_ms": 30_000,
        }
        config.update(producer_config)
        self._producer = KafkaProducer(**config)
        self.end_offsets: dict[int, int] = {}
        self.sent = 0
        self.acked = 0
        self._errors: list[BaseException] = []

    def publish(self, key: bytes, value: bytes) -> None:
        future = self._producer.send(self.topic, key=key, value=value)
        self.sent += 1
        future.add_callback(self._on_ack)
        future.add_errback(self._errors.append)

    def _on_ack(self, metadata: Any) -> None:
        self.acked += 1
        end = metadata.offset + 1
        if end > self.end_offsets.get(metadata.partition, 0):
            self.end_offsets[metadata.partition] = end

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every send; raise :class:`PublishError` if any was not acknowledged."""
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise PublishError(f"flush failed: {exc}") from exc
        if self._errors:
            raise PublishError(f"{len(self._errors)} reports not acknowledged: {self._errors[0]!r}")
        if self.acked != self.sent:
            raise PublishError(f"{self.sent - self.acked} of {self.sent} reports unacknowledged")

    def close(self) -> None:
        self._producer.close(timeout=10)

    def __enter__(self) -> ReportPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_all(
    publisher: ReportPublisher,
    frames: Any,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 500,
) -> int:
    """Publish (key, value) pairs; returns how many. ``on_progress`` sees a running count."""
    count = 0
    for key, value in frames:
        publisher.publish(key, value)
        count += 1
        if on_progress and count % progress_every == 0:
            on_progress(count)
    publisher.flush()
    return count
