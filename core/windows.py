"""Tumbling event-time windows and the one rule for splitting a sample across them.

Agents align ticks to the clock, so a sample normally lies inside one window. When one
does straddle a boundary it is split by time, in integers, with the cumulative-floor rule:

    part_k = floor(v * t_k / T) - floor(v * t_(k-1) / T)

where ``t_k`` is the tick time elapsed up to the end of piece ``k`` and ``T`` the tick
length. The parts always sum to ``v`` exactly, the same input always gives the same parts,
and a counter equal to the tick length (a fully allocated GPU) splits exactly by time.
The sample itself is counted once, in the window that holds its tick start.

    tick      [-------------------)        T = 30 s, v = 30 s allocated
    windows  |0         |60        |120
                   [45 s-60 s)[60 s-75 s)  -> 15 s to window 0, 15 s to window 60
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

from core.units import US_PER_DAY, epoch_us, utc_datetime


def window_start(t_us: int, width_us: int) -> int:
    return t_us - t_us % width_us


def split_points(start_us: int, end_us: int, width_us: int) -> list[tuple[int, int]]:
    """(window_start, elapsed_end) for each window that [start, end) touches, in order."""
    pieces = []
    w = window_start(start_us, width_us)
    while w < end_us:
        pieces.append((w, min(w + width_us, end_us) - start_us))
        w += width_us
    return pieces


def split_by_elapsed(
    values: Sequence[int], length: int, elapsed_ends: Sequence[int]
) -> list[list[int]]:
    """Parts of each value for pieces of a span of ``length`` ending at ``elapsed_ends``
    (increasing, the last equal to ``length``), by the cumulative-floor rule."""
    parts = []
    previous = [0] * len(values)
    for elapsed in elapsed_ends:
        cumulative = [v * elapsed // length for v in values]
        parts.append([c - p for c, p in zip(cumulative, previous, strict=True)])
        previous = cumulative
    return parts


def split_counters(
    values: Sequence[int], start_us: int, end_us: int, width_us: int
) -> Iterator[tuple[int, list[int]]]:
    """Yield (window_start, parts of each value) for a tick, by the cumulative-floor rule."""
    pieces = split_points(start_us, end_us, width_us)
    if len(pieces) == 1:
        yield pieces[0][0], list(values)
        return
    parts = split_by_elapsed(values, end_us - start_us, [elapsed for _, elapsed in pieces])
    yield from zip([w for w, _ in pieces], parts, strict=True)


def month_start(t_us: int) -> int:
    """The start (epoch µs) of the UTC calendar month holding ``t_us``."""
    return _month_start_of_day(t_us // US_PER_DAY)


def month_end(start_us: int) -> int:
    """The start of the month after the one starting at ``start_us``."""
    return month_start(start_us + 32 * US_PER_DAY)


@lru_cache(maxsize=4096)
def _month_start_of_day(day: int) -> int:
    # Cached by day number: the worker asks for every minute piece it adds.
    date = utc_datetime(day * US_PER_DAY)
    return epoch_us(date.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
