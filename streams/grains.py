"""Hour and day rollups beside the minute windows, in the same cumulative-partial scheme.

A question about a day or a month should not read every minute of it: the worker writes
each window's usage at three grains. The coarse grains follow the minute grain exactly:

- an on-time minute piece adds to the open window of its hour and of its day, and a
  coarse window's partial is its cumulative sum as of the applied offset (``version``),
  so a coarse partial is always the sum of the minute partials it covers;
- a late minute piece (an adjustment) is a late piece at every grain: the coarse
  adjustments of a late report are its minute adjustments summed per hour and per day.

So every grain's total (partials plus adjustments) is the same usage, and reconciliation
can check the identity row for row. A coarse window closes once the minute windows close
past its end; no on-time piece can reach it after that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meter.units import US_PER_DAY, US_PER_MINUTE
from streams.aggregate import RollupKey, add_into

US_PER_HOUR = 60 * US_PER_MINUTE


@dataclass(frozen=True)
class Grain:
    name: str
    width_us: int

    def start_of(self, t_us: int) -> int:
        return t_us - t_us % self.width_us

    def key_of(self, key: RollupKey) -> RollupKey:
        return RollupKey(key[0], key[1], key[2], key[3] - key[3] % self.width_us)


HOUR = Grain("hour", US_PER_HOUR)
DAY = Grain("day", US_PER_DAY)
COARSE_GRAINS = (HOUR, DAY)

CoarseWindows = dict[str, dict[RollupKey, list[int]]]  # grain name -> key -> sums


def empty_coarse() -> CoarseWindows:
    return {grain.name: {} for grain in COARSE_GRAINS}


class OnTime:
    """One batch's on-time pieces: added to the open windows of every grain, and the keys
    each piece touched remembered with their live sums (a window closed later in the
    batch keeps its final sums here after it leaves the state)."""

    __slots__ = ("coarse", "minutes", "touched", "windows")

    def __init__(self, windows: dict[RollupKey, list[int]], coarse: CoarseWindows) -> None:
        self.windows = windows
        self.coarse = coarse
        self.minutes: dict[RollupKey, list[int]] = {}
        self.touched: CoarseWindows = empty_coarse()

    def add(self, key: RollupKey, parts: list[int]) -> None:
        add_into(self.windows, key, parts)
        self.minutes[key] = self.windows[key]
        t, s, c, w = key
        for grain in COARSE_GRAINS:
            open_windows = self.coarse[grain.name]
            coarse_key = RollupKey(t, s, c, w - w % grain.width_us)
            add_into(open_windows, coarse_key, parts)
            self.touched[grain.name][coarse_key] = open_windows[coarse_key]


def evict_closed(coarse: CoarseWindows, closed_before_us: int) -> None:
    """Drop the coarse windows that end at or before ``closed_before_us``."""
    for grain in COARSE_GRAINS:
        open_windows = coarse[grain.name]
        closed = [k for k in open_windows if k.window_start_us + grain.width_us <= closed_before_us]
        for key in closed:
            del open_windows[key]


def coarse_adjustments(
    minute_adjustments: Iterable[tuple[RollupKey, int, tuple[int, ...]]], grain: Grain
) -> list[tuple[RollupKey, int, tuple[int, ...]]]:
    """(key, offset, sums) of minute adjustments summed per ``grain`` window and offset,
    in key order."""
    summed: dict[tuple[RollupKey, int], list[int]] = {}
    for key, offset, sums in minute_adjustments:
        add_into(summed, (grain.key_of(key), offset), list(sums))  # type: ignore[arg-type]
    return [(key, offset, tuple(sums)) for (key, offset), sums in sorted(summed.items())]


def seed_from_minutes(
    coarse: CoarseWindows,
    closed_minutes: Iterable[tuple[RollupKey, list[int]]],
    open_minutes: dict[RollupKey, list[int]],
    closed_before_us: int,
) -> None:
    """Rebuild the open coarse windows of a state written before they were kept
    (snapshot format 2 or older): the closed minutes' final partials, as stored, plus the
    open minutes' sums. Only windows that are still open are kept."""
    for source in (closed_minutes, open_minutes.items()):
        for key, sums in source:
            for grain in COARSE_GRAINS:
                coarse_key = grain.key_of(key)
                if coarse_key.window_start_us + grain.width_us > closed_before_us:
                    add_into(coarse[grain.name], coarse_key, list(sums))
