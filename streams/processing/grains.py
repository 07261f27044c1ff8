"""Hour, day and month rollups beside the minute windows, in the same cumulative-partial scheme.

A question about a day or a month should not read every minute of it: the worker writes
each window's usage at four grains. The coarse grains follow the minute grain exactly:

- an on-time minute piece adds to the open window of its hour, its day and its calendar
  month, and a coarse window's partial is its cumulative sum as of the applied offset
  (``version``);
- a late minute piece (an adjustment) is late for a coarse grain only if that grain's
  window had closed too when the report was applied: otherwise it adds to the open
  window like an on-time piece. A report five minutes late adjusts its minute but not its
  hour, its day or its month; a month gets an adjustment only for usage that comes after
  the month has closed. So a month holds a few adjustments, not one per late report, and
  a question about it reads about as many rows however late the fleet reports.

So every grain's total (partials plus adjustments) is the same usage, and reconciliation
checks that identity window by window. Whether a piece joins a window or adjusts it is
decided per message from the partition's closed edge at that message, so a replay decides
the same. A coarse window closes once the minute windows close past its end; no on-time
piece can reach it after that. Months are calendar months in UTC, so their width varies:
a grain says where its window starts and ends.

A state written by a worker that made every late piece late at every grain says how far
that worker may have written (``PartitionState.late_folds_after``): a replay of those
messages decides as it did, or the usage would be counted in a partial and again in the
adjustment it already wrote (``streams/EXACTLY_ONCE.md``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.units import US_PER_DAY, US_PER_MINUTE
from core.windows import month_end, month_start
from streams.processing.aggregate import RollupKey, add_into

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
# grain name -> (window key, offset of the late report) -> sums
CoarseLate = dict[str, dict[tuple[RollupKey, int], list[int]]]


def empty_coarse() -> CoarseWindows:
    return {grain.name: {} for grain in COARSE_GRAINS}


class OnTime:
    """One batch's pieces at the coarse grains: each added to the open windows of every
    grain, or for a late piece to those still open, and the keys each piece touched
    remembered with their live sums (a window closed later in the batch keeps its final
    sums here after it leaves the state); and the coarse adjustments of late pieces."""

    __slots__ = ("coarse", "late", "minutes", "touched", "windows")

    def __init__(self, windows: dict[RollupKey, list[int]], coarse: CoarseWindows) -> None:
        self.windows = windows
        self.coarse = coarse
        self.minutes: dict[RollupKey, list[int]] = {}
        self.touched: CoarseWindows = empty_coarse()
        self.late: CoarseLate = {grain.name: {} for grain in COARSE_GRAINS}

    def add(self, key: RollupKey, parts: list[int]) -> None:
        add_into(self.windows, key, parts)
        self.minutes[key] = self.windows[key]
        for grain in COARSE_GRAINS:
            open_windows = self.coarse[grain.name]
            coarse_key = grain.key_of(key)
            add_into(open_windows, coarse_key, parts)
            self.touched[grain.name][coarse_key] = open_windows[coarse_key]

    def add_late(
        self, key: RollupKey, parts: list[int], offset: int, open_after_us: int | None
    ) -> None:
        """A late minute piece of the report at ``offset``: added to each coarse window
        that ends after ``open_after_us`` (the closed edge when the report was applied),
        an adjustment of the others; of every coarse window if ``open_after_us`` is None."""
        for grain in COARSE_GRAINS:
            coarse_key = grain.key_of(key)
            end_us = grain.end_of(coarse_key.window_start_us)
            if open_after_us is not None and end_us > open_after_us:
                open_windows = self.coarse[grain.name]
                add_into(open_windows, coarse_key, parts)
                self.touched[grain.name][coarse_key] = open_windows[coarse_key]
            else:
                add_into(self.late[grain.name], (coarse_key, offset), parts)  # type: ignore[arg-type]


def evict_closed(coarse: CoarseWindows, closed_before_us: int) -> None:
    """Drop the coarse windows that end at or before ``closed_before_us``."""
    for grain in COARSE_GRAINS:
        open_windows = coarse[grain.name]
        closed = [k for k in open_windows if grain.end_of(k.window_start_us) <= closed_before_us]
        for key in closed:
            del open_windows[key]


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
