"""How far a consumer group has got, read from its committed offsets.

The local broker's ListOffsets(LATEST) is wrong (docs/BROKER.md, bug 1), so "the end"
is what the caller knows it published: the publisher's acknowledged offsets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from kafka import KafkaConsumer, TopicPartition

from streams.errors import NotConsumedError


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
    finally:
        consumer.close()


def wait_until_consumed(
    bootstrap: str,
    group: str,
    topic: str,
    end_offsets: Mapping[int, int],
    timeout_s: float,
    on_progress: Callable[[int, int], None] | None = None,
    poll_s: float = 0.5,
) -> None:
    """Block until ``group`` has committed ``end_offsets`` on every partition."""
    partitions = max(end_offsets, default=-1) + 1
    target = sum(end_offsets.values())
    deadline = time.monotonic() + timeout_s
    while True:
        committed = committed_offsets(bootstrap, group, topic, partitions)
        done = sum(min(committed.get(p, 0), end) for p, end in end_offsets.items())
        if on_progress:
            on_progress(done, target)
        if all(committed.get(p, 0) >= end for p, end in end_offsets.items()):
            return
        if time.monotonic() > deadline:
            raise NotConsumedError(
                f"group {group} committed {committed}, expected {dict(end_offsets)} "
                f"after {timeout_s:.0f} s"
            )
        time.sleep(poll_s)
