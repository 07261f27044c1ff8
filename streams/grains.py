"""Hour, day and month rollups beside the minute windows, in the same cumulative-partial scheme.

A question about a day or a month should not read every minute of it: the worker writes
each window's usage at four grains. The coarse grains follow the minute grain exactly:

- an on-time minute piece adds to the open window of its hour, its day and its calendar
  month, and a coarse window's partial is its cumulative sum as of the applied offset
  (``version``), so a coarse partial is always the sum of the minute partials it covers;
- a late minute piece (an adjustment) is a late piece at every grain: the coarse
  adjustments of a late report are its minute adjustments summed per hour, day and month.

So every grain's total (partials plus adjustments) is the same usage, and reconciliation
can check the identity row for row. A coarse window closes once the minute windows close
past its end; no on-time piece can reach it after that. Months are calendar months in
UTC, so their width varies: a grain says where its window starts and ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meter.units import US_PER_DAY, US_PER_MINUTE
from meter.windows import month_end, month_start
from streams.aggregate import RollupKey, add_into

US_PER_HOUR = 60 * US_PER_MINUTE


@dataclass(frozen=True)
class Grain:
    """A grain of fixed width (``width_us``), or the calendar month (``width_us`` 0)."""

    name: str
    width_us: int

    def start_of(self, t_us: int) -> int:
        if self.width_us:
            return t_us - t_us % self.width_us
        return month_start(t_us)

    def end_of(self, start_us: int) -> int:
        """The end of the window starting at ``start_us``."""
        return start_us + self.width_us if self.width_us else month_end(start_us)

    def key_of(self, key: RollupKey) -> RollupKey:
        return RollupKey(key[0], key[1], key[2], self.start_of(key[3]))


HOUR = Grain("hour", US_PER_HOUR)
DAY = Grain("day", US_PER_DAY)
MONTH = Grain("month", 0)
COARSE_GRAINS = (HOUR, DAY, MONTH)
# Each coarse grain is rebuilt from the one below it when a state lacks it (the minute
# windows are the grain below the hour and the day).
SEEDED_FROM_MINUTES = (HOUR, DAY)

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
        for grain in COARSE_GRAINS:
            open_windows = self.coarse[grain.name]
            coarse_key = grain.key_of(key)
            add_into(open_windows, coarse_key, parts)
            self.touched[grain.name][coarse_key] = open_windows[coarse_key]


def evict_closed(coarse: CoarseWindows, closed_before_us: int) -> None:
    """Drop the coarse windows that end at or before ``closed_before_us``."""
    for grain in COARSE_GRAINS:
        open_windows = coarse[grain.name]
        closed = [k for k in open_windows if grain.end_of(k.window_start_us) <= closed_before_us]
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


def seed_from_finer(
    coarse: CoarseWindows,
    grains: Iterable[Grain],
    closed_finer: Iterable[tuple[RollupKey, list[int]]],
    open_finer: dict[RollupKey, list[int]],
    closed_before_us: int,
) -> None:
    """Rebuild the open windows of ``grains`` for a state written before they were kept:
    the closed finer windows' final partials, as stored, plus the open finer windows'
    sums (snapshot format 2 or older: hours and days from the minutes; format 3: months
    from the days). Only windows that are still open are kept."""
    grains = tuple(grains)
    for grain in grains:
        coarse[grain.name] = {}
    for source in (closed_finer, open_finer.items()):
        for key, sums in source:
            for grain in grains:
                coarse_key = grain.key_of(key)
                if grain.end_of(coarse_key.window_start_us) > closed_before_us:
                    add_into(coarse[grain.name], coarse_key, list(sums))
