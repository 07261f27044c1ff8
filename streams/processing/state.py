"""The state of one input partition, and its snapshot format.

Everything the processor needs to continue exactly where it stopped: the open windows'
cumulative sums, each node's seq bookkeeping, each GPU's metered time, event-time
progress, the offset applied through, and counters. A snapshot is compressed JSON, stored
in the warehouse as the last write of every batch (see ``streams/EXACTLY_ONCE.md``).
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.processing.aggregate import RollupKey
from streams.processing.gputime import GpuTime
from streams.processing.grains import CoarseWindows, empty_coarse
from streams.processing.grains import evict_closed as evict_closed_coarse
from streams.processing.seqtrack import GapRow, NodeSeq, SeqVerdict

# 2: boots' lead-ins and deferred ranges (seqtrack.py) and each GPU's metered time
# (gputime.py). 3: the open hour and day windows (grains.py). 4: the open month windows.
# 5: the offset after which late pieces join the coarse windows still open.
# Formats 1 to 4 are still read; what they lack is rebuilt from the warehouse on load.
SNAPSHOT_FORMAT = 5
READABLE_FORMATS = (1, 2, 3, 4, 5)


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
    gpu_time: GpuTime = field(default_factory=GpuTime)  # what each GPU has been metered for
    coarse: CoarseWindows = field(default_factory=empty_coarse)  # open hour, day, month windows
    # The coarse grains a snapshot did not keep: they must be rebuilt from the warehouse
    # before the next batch (streams/output/sink.py).
    unseeded: frozenset[str] = field(default=frozenset(), compare=False)
    # Late pieces of the messages after this offset join the coarse windows still open
    # (grains.py); at or before it a worker that made them late at every grain may already
    # have written them so. None: not yet known (a state of format 4 or older,
    # until the warehouse says how far its worker wrote; meanwhile nothing joins).
    late_folds_after: int | None = -1
    # node_id -> its boots in ``nodes``: derived, not stored.
    _boots_of: dict[str, list[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # (node, boot) -> (next seq, open gaps) as last written to node_progress
    # (nodeprogress.py): derived, not stored; a loaded state starts from its nodes.
    node_marks: dict[tuple[str, str], tuple[int, int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for (node_id, boot_id), tracker in self.nodes.items():
            self._boots_of.setdefault(node_id, []).append(boot_id)
            self.node_marks[(node_id, boot_id)] = (tracker.next_seq, len(tracker.gaps))

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

    def folds_late(self, offset: int) -> bool:
        """Whether the late pieces of the message at ``offset`` join open coarse windows."""
        return self.late_folds_after is not None and offset > self.late_folds_after

    def evict_closed(self) -> None:
        for key in [k for k in self.windows if k.window_start_us < self.closed_before_us]:
            del self.windows[key]
        evict_closed_coarse(self.coarse, self.closed_before_us)

    def observe_seq(
        self, node_id: str, boot_id: str, seq: int, seen_us: int, offset: int
    ) -> tuple[SeqVerdict, list[GapRow]]:
        """Judge a report's seq for its (node, boot) and link the node's boots
        (``streams/processing/seqtrack.py``): a duplicate, or new, with the gap rows it changed."""
        tracker = self.nodes.get((node_id, boot_id))
        if tracker is None:
            tracker = self._first_seen(node_id, boot_id, seq)
        if not tracker.defers(seq):
            return tracker.observe(node_id, boot_id, seq, seen_us, offset)
        if not tracker.see_deferred(seq):
            return SeqVerdict.DUPLICATE, []
        owner_boot = str(tracker.defers_to[0])  # type: ignore[index]
        rows = self.nodes[(node_id, owner_boot)].fill(node_id, owner_boot, seq, offset)
        return (SeqVerdict.NEW, []) if rows is None else (SeqVerdict.FILLED, rows)

    def _first_seen(self, node_id: str, boot_id: str, seq: int) -> NodeSeq:
        """Seq bookkeeping for a boot of ``node_id`` first seen at ``seq``.

        Agents persist seq across restarts, so a new boot usually continues where the
        node's latest boot stopped: what lies between is the new boot's lead-in, which the
        latest boot defers to it (its spooled reports may still come). A boot first seen
        inside the lead-in of another boot of the node defers that lead-in likewise. A node
        never seen before, or one whose seq went backwards (its state was lost), counts
        from 0.
        """
        boots = self._boots_of.setdefault(node_id, [])
        previous = self.latest_boot.get(node_id)
        latest = self.nodes.get((node_id, previous)) if previous is not None else None
        if latest is not None and latest.defers_to is None and latest.next_seq <= seq:
            tracker = NodeSeq(next_seq=latest.next_seq)
            if seq > latest.next_seq:
                tracker.lead_in = [latest.next_seq, seq - 1]
                latest.defers_to = [boot_id, latest.next_seq, seq - 1]
            self.latest_boot[node_id] = boot_id
        else:
            # Lead-ins can overlap after a seq reset: the narrowest holding ``seq`` owns it,
            # chosen by value, never by the order boots were loaded in (determinism).
            holders = [
                (lead_in[1] - lead_in[0], b)
                for b in boots
                if _holds(lead_in := self.nodes[(node_id, b)].lead_in, seq)
            ]
            owner = min(holders)[1] if holders else None
            if owner is not None:
                lead_in = self.nodes[(node_id, owner)].lead_in
                tracker = NodeSeq(defers_to=[owner, *lead_in])  # type: ignore[misc]
            else:
                tracker = NodeSeq(lead_in=[0, seq - 1] if seq > 0 else None)
                self.latest_boot[node_id] = boot_id
        self.nodes[(node_id, boot_id)] = tracker
        boots.append(boot_id)
        return tracker

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
            "nodes": sorted([node, boot, *s.to_row()] for (node, boot), s in self.nodes.items()),
            "latest_boot": dict(sorted(self.latest_boot.items())),
            "gpu_time": self.gpu_time.to_doc(),
            "coarse": {
                grain: sorted([*key, *sums] for key, sums in windows.items())
                for grain, windows in sorted(self.coarse.items())
            },
            "late_folds_after": self.late_folds_after,
        }
        text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        # Level 1: written for every partition of every batch, this is on the path to
        # freshness; level 6 took 2.5x as long for a blob 10 % smaller (docs/PERFORMANCE.md).
        return zlib.compress(text.encode("utf-8"), 1)

    @classmethod
    def from_snapshot(cls, blob: bytes) -> PartitionState:
        doc = json.loads(zlib.decompress(blob))
        if doc.get("format") not in READABLE_FORMATS:
            raise ValueError(f"unknown partition snapshot format {doc.get('format')!r}")
        return cls(
            topic=doc["topic"],
            partition=doc["partition"],
            applied_offset=doc["applied_offset"],
            max_event_us=doc["max_event_us"],
            closed_before_us=doc["closed_before_us"],
            counters=Counter(doc["counters"]),
            windows={RollupKey(*row[:4]): list(row[4:]) for row in doc["windows"]},
            nodes={(n, b): NodeSeq.from_row(row) for n, b, *row in doc["nodes"]},
            # Snapshots written before boots were linked have no such map.
            latest_boot=dict(doc.get("latest_boot", {})),
            # Format 1 kept no metered time: the check starts with what comes next.
            gpu_time=GpuTime.from_doc(doc.get("gpu_time", [])),
            coarse={
                **empty_coarse(),
                **{
                    grain: {RollupKey(*row[:4]): list(row[4:]) for row in rows}
                    for grain, rows in doc.get("coarse", {}).items()
                },
            },
            unseeded=frozenset(empty_coarse()) - set(doc.get("coarse", {})),
            late_folds_after=doc["late_folds_after"] if doc["format"] >= 5 else None,
        )


def _holds(span: list[int] | None, seq: int) -> bool:
    return span is not None and span[0] <= seq <= span[1]
