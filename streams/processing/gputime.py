"""The time each GPU has been metered for, per partition: no GPU-µs is billed twice.

Agents promise that a GPU's ticks tile time. The pipeline enforces it: a report whose
ticks overlap time already metered for one of its GPUs (or MIG instances, each by its own
uuid) is refused whole as ``overlapping_time`` (``streams/processing/processor.py``); one
whose ticks overlap each other is refused by validation.

Per GPU the metered time is a few disjoint ranges (one, plus one more per outage or
missing report), kept as a flat sorted list ``[start0, end0, start1, end1, ...]`` with
adjacent ranges merged. A late report that fills a hole is checked against the ranges on
both sides of it.

**Memory.** Only time after the *horizon* is remembered and checked: the partition's event
time (the latest report end metered) less ``time_memory_us`` (35 days by default). A
tick, or the part of one, before the horizon is neither checked nor recorded: a report
that late is metered as it comes. At the end of every batch ranges are cut at the horizon
rounded down to the hour (:meth:`GpuTime.forget_before`), so the state is the same however
batches were cut.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.units import US_PER_SECOND

DEFAULT_TIME_MEMORY_US = 35 * 86_400 * US_PER_SECOND


@dataclass(frozen=True)
class Overlap:
    sample: int  # position of the sample in its report
    gpu_uuid: str
    tick: tuple[int, int]
    metered: tuple[int, int]  # the metered range it overlaps

    def detail(self) -> str:
        return (
            f"sample {self.sample}: GPU {self.gpu_uuid} tick [{self.tick[0]}, {self.tick[1]}) "
            f"overlaps time already metered [{self.metered[0]}, {self.metered[1]})"
        )


# Ranges are cut at the horizon rounded down to this, so that the cut, a pass over every
# GPU, runs once per hour of event time rather than every batch.
FORGET_STEP_US = 3_600 * US_PER_SECOND


@dataclass
class GpuTime:
    ranges: dict[str, list[int]] = field(default_factory=dict)
    # Where the ranges were last cut: derived, not stored (a restored state cuts again).
    _cut_at: int | None = field(default=None, compare=False, repr=False)

    def last_end(self, gpu_uuid: str) -> int | None:
        found = self.ranges.get(gpu_uuid)
        return found[-1] if found else None

    def overlap(self, samples: Iterable[Mapping[str, Any]], horizon_us: int) -> Overlap | None:
        """The first sample (in report order) whose tick after the horizon overlaps
        metered time of its GPU."""
        for index, s in enumerate(samples):
            start, end = max(s["tick_start_us"], horizon_us), s["tick_end_us"]
            found = self.ranges.get(s["gpu_uuid"]) if end > start else None
            if not found:
                continue
            # Starts and ends alternate in one increasing list: where ``end`` falls says
            # which range is the last to start before it, the only one that can overlap.
            p = bisect.bisect_left(found, end)
            if p % 2:
                metered = (found[p - 1], found[p])
            elif p and found[p - 1] > start:
                metered = (found[p - 2], found[p - 1])
            else:
                continue
            return Overlap(index, s["gpu_uuid"], (s["tick_start_us"], end), metered)
        return None

    def record(self, samples: Iterable[Mapping[str, Any]], horizon_us: int) -> None:
        """Add the samples' ticks (after the horizon) as metered; they overlap nothing."""
        for s in samples:
            start, end = max(s["tick_start_us"], horizon_us), s["tick_end_us"]
            if end > start:
                self.add(s["gpu_uuid"], start, end)

    def add(self, gpu_uuid: str, start: int, end: int) -> None:
        found = self.ranges.setdefault(gpu_uuid, [])
        if not found or start > found[-1]:  # the common case: time goes on
            found += (start, end)
            return
        if start == found[-1]:
            found[-1] = end
            return
        i = bisect.bisect_right(found, start)  # even: start is in a hole (or at an end)
        found[i:i] = (start, end)
        # Merge with the range after, then the one before, where they touch.
        if i + 2 < len(found) and found[i + 1] == found[i + 2]:
            del found[i + 1 : i + 3]
        if i > 0 and found[i - 1] == found[i]:
            del found[i - 1 : i + 1]

    def forget_before(self, horizon_us: int) -> None:
        """Cut every GPU's ranges at the horizon, rounded down to the hour (time checked
        is always after the horizon, so what is kept before it never matters); drop GPUs
        with nothing after it."""
        horizon_us -= horizon_us % FORGET_STEP_US
        if horizon_us == self._cut_at:
            return
        self._cut_at = horizon_us
        for gpu_uuid in list(self.ranges):
            found = self.ranges[gpu_uuid]
            if found[-1] <= horizon_us:
                del self.ranges[gpu_uuid]
                continue
            if found[0] >= horizon_us:
                continue
            i = bisect.bisect_right(found, horizon_us)
            kept = found[i - i % 2 :]
            kept[0] = max(kept[0], horizon_us)
            self.ranges[gpu_uuid] = kept

    def to_doc(self) -> list[list[Any]]:
        ranges = self.ranges
        return [[gpu, ranges[gpu]] for gpu in sorted(ranges)]  # keys are unique: same order

    @classmethod
    def from_doc(cls, doc: list[list[Any]]) -> GpuTime:
        return cls({gpu: list(found) for gpu, found in doc})
