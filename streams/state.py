"""The state of one input partition, and its snapshot format.

Everything the processor needs to continue exactly where it stopped: the open windows'
cumulative sums, each node's seq bookkeeping, event-time progress, the offset applied
through, and counters. A snapshot is compressed JSON, stored in the warehouse as the last
write of every batch (see ``streams/EXACTLY_ONCE.md``).
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.aggregate import RollupKey
from streams.seqtrack import NodeSeq

SNAPSHOT_FORMAT = 1


@dataclass
class PartitionState:
    topic: str
    partition: int
    windows: dict[RollupKey, list[int]] = field(default_factory=dict)
    nodes: dict[tuple[str, str], NodeSeq] = field(default_factory=dict)
    latest_boot: dict[str, str] = field(default_factory=dict)  # node_id -> boot_id
    applied_offset: int = -1
    max_event_us: int = 0
    closed_before_us: int = 0
    counters: Counter[str] = field(default_factory=Counter)

    def advance_event_time(self, end_us: int, lateness_us: int, width_us: int) -> bool:
        """Note an accepted report ending at ``end_us``; True if more windows closed.

        A window closes once event time has passed its end by the lateness bound. Closed
        windows stay in ``windows`` until :meth:`evict_closed`, so a caller may still
        read their final sums.
        """
        if end_us <= self.max_event_us:
            return False
        self.max_event_us = end_us
        horizon = end_us - lateness_us
        closed_before = horizon - horizon % width_us
        if closed_before <= self.closed_before_us:
            return False
        self.closed_before_us = closed_before
        return True

    def evict_closed(self) -> None:
        for key in [k for k in self.windows if k.window_start_us < self.closed_before_us]:
            del self.windows[key]

    def first_seq_of_boot(self, node_id: str, seq: int) -> NodeSeq:
        """Seq bookkeeping for a boot of ``node_id`` first seen at ``seq``.

        Agents persist seq across restarts, so a new boot usually continues where the
        node's previous boot stopped: gaps are counted from there (reports the previous
        boot spooled but never delivered show up as a gap). A node never seen before, or
        one whose seq went backwards (its state was lost), counts from 0.
        """
        previous = self.latest_boot.get(node_id)
        tracker = self.nodes.get((node_id, previous)) if previous is not None else None
        if tracker is not None and tracker.next_seq <= seq:
            return NodeSeq(next_seq=tracker.next_seq)
        return NodeSeq()

    def open_gaps(self) -> int:
        return sum(len(n.gaps) for n in self.nodes.values())

    def to_snapshot(self) -> bytes:
        doc: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "topic": self.topic,
            "partition": self.partition,
            "applied_offset": self.applied_offset,
            "max_event_us": self.max_event_us,
            "closed_before_us": self.closed_before_us,
            "counters": dict(sorted(self.counters.items())),
            "windows": sorted([*key, *sums] for key, sums in self.windows.items()),
            "nodes": sorted(
                [node, boot, s.next_seq, s.gaps] for (node, boot), s in self.nodes.items()
            ),
            "latest_boot": dict(sorted(self.latest_boot.items())),
        }
        text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        return zlib.compress(text.encode("utf-8"), 6)

    @classmethod
    def from_snapshot(cls, blob: bytes) -> PartitionState:
        doc = json.loads(zlib.decompress(blob))
        if doc.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown partition snapshot format {doc.get('format')!r}")
        return cls(
            topic=doc["topic"],
            partition=doc["partition"],
            applied_offset=doc["applied_offset"],
            max_event_us=doc["max_event_us"],
            closed_before_us=doc["closed_before_us"],
            counters=Counter(doc["counters"]),
            windows={RollupKey(*row[:4]): list(row[4:]) for row in doc["windows"]},
            nodes={
                (n, b): NodeSeq(next_seq, [list(g) for g in gaps])
                for n, b, next_seq, gaps in doc["nodes"]
            },
            # Snapshots written before boots were linked have no such map.
            latest_boot=dict(doc.get("latest_boot", {})),
        )
