"""Hour, day and month rollups follow the minute rollups exactly (streams/grains.py).

Every coarse partial a batch writes is the sum of the minute partials of its window as of
the same version; every coarse adjustment is the sum of one late report's minute
adjustments in its window; and a state saved before coarse windows (or month windows)
were kept rebuilds them to exactly what they would have been.
"""

from __future__ import annotations

import json
import random
import zlib

import pytest

from meter.units import US_PER_DAY, US_PER_MINUTE
from schemas import ReportCodec
from streams.aggregate import RollupKey
from streams.contract import ProcessorSettings
from streams.grains import COARSE_GRAINS, DAY, HOUR, MONTH, SEEDED_FROM_MINUTES, seed_from_finer
from streams.hotpath.processor import FastPartitionProcessor
from streams.processor import PartitionProcessor
from streams.state import PartitionState
from tests.factories import (
    MIDNIGHT,
    MONTH_MIDNIGHT,
    TICK_US,
    make_report,
    make_sample,
    messages,
    midnight_fleet,
)  # fmt: skip

CODEC = ReportCodec()
W = US_PER_MINUTE


def cut(frames, rng):
    at = 0
    while at < len(frames):
        step = rng.randint(1, 23)
        yield frames[at : at + step]
        at += step


@pytest.mark.parametrize("midnight", [MIDNIGHT, MONTH_MIDNIGHT], ids=["day", "month"])
@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_coarse_rows_are_the_sums_of_the_minute_rows_at_every_version(fast, seed, midnight):
    kind = FastPartitionProcessor if fast else PartitionProcessor
    p = kind(PartitionState("usage", 5), ProcessorSettings(lateness_us=3 * W))
    # Stamped by the broker a day after the fleet's midnight, as a live topic would be.
    frames = messages(midnight_fleet(seed, midnight=midnight), timestamp_us=midnight + US_PER_DAY)
    minutes: dict[RollupKey, tuple[int, ...]] = {}  # each minute key's latest partial
    adjusted = {grain.name: 0 for grain in COARSE_GRAINS}
    late_minutes = 0
    seen = set()
    for batch in cut(frames, random.Random(seed)):
        out = p.process(batch)
        for row in out.rollups:
            minutes[row.key] = row.sums
        for grain in COARSE_GRAINS:
            for row in out.coarse_rollups[grain.name]:
                assert row.version == out.applied_offset and row.partition == 5
                expected = [0] * 5
                for key, sums in minutes.items():
                    if grain.key_of(key) == row.key:
                        expected = [a + b for a, b in zip(expected, sums, strict=True)]
                assert list(row.sums) == expected, (grain.name, row.key)
            late: dict = {}
            for a in out.adjustments:
                key = (grain.key_of(a.key), a.offset)
                late[key] = [x + y for x, y in zip(late.get(key, [0] * 5), a.sums, strict=True)]
            got = {(a.key, a.offset): list(a.sums) for a in out.coarse_adjustments[grain.name]}
            assert got == late
            adjusted[grain.name] += len(got)
        late_minutes += len(out.adjustments)
        seen |= {a.key.window_start_us for a in out.adjustments}
    # The fleet exercised what it is meant to: late usage, and both sides of midnight.
    assert late_minutes and all(adjusted.values())
    seen |= {k.window_start_us for k in minutes}
    assert {w < midnight for w in seen} == {True, False}
    # Across a month's end, two month windows were written.
    months = {MONTH.start_of(w) for w in seen}
    assert len(months) == (2 if midnight == MONTH_MIDNIGHT else 1)


def test_coarse_windows_close_when_the_minutes_close_past_their_end():
    p = PartitionProcessor(PartitionState("usage", 0), ProcessorSettings(lateness_us=2 * W))
    before = make_report([make_sample(MIDNIGHT - W)], seq=0)
    # Ends 2 minutes after midnight: with 2 minutes' lateness, minutes close up to midnight.
    after = make_report([make_sample(MIDNIGHT + 2 * W - TICK_US)], seq=1)
    p.process(messages([CODEC.encode(before)]))
    day_before = DAY.start_of(MIDNIGHT - W)
    assert {k.window_start_us for k in p.state.coarse["day"]} == {day_before}
    p.process(messages([CODEC.encode(after)], first_offset=1))
    # The minutes closed up to midnight: the day before and its last hour are final.
    assert p.state.closed_before_us == MIDNIGHT
    assert {k.window_start_us for k in p.state.coarse["day"]} == {MIDNIGHT}
    assert {k.window_start_us for k in p.state.coarse["hour"]} == {HOUR.start_of(MIDNIGHT)}


def _run_to_the_end(midnight: int, seed: int):
    """A processor fed a whole fleet across ``midnight``, and the final partial of every
    minute and day it wrote."""
    p = FastPartitionProcessor(PartitionState("usage", 2), ProcessorSettings(lateness_us=3 * W))
    minutes: dict[RollupKey, tuple[int, ...]] = {}
    days: dict[RollupKey, tuple[int, ...]] = {}
    frames = messages(midnight_fleet(seed, midnight=midnight), timestamp_us=midnight + US_PER_DAY)
    for batch in cut(frames, random.Random(seed)):
        out = p.process(batch)
        minutes |= {row.key: row.sums for row in out.rollups}
        days |= {row.key: row.sums for row in out.coarse_rollups["day"]}
    return p.state, minutes, days


def _as_format(state: PartitionState, fmt: int, kept: tuple[str, ...]) -> PartitionState:
    doc = json.loads(zlib.decompress(state.to_snapshot()))
    doc["format"] = fmt
    if kept:
        doc["coarse"] = {grain: doc["coarse"][grain] for grain in kept}
    else:
        del doc["coarse"]
    return PartitionState.from_snapshot(zlib.compress(json.dumps(doc).encode()))


def _closed(finals: dict, before_us: int, grain=None) -> list:
    end = (
        (lambda k: k.window_start_us + W)
        if grain is None
        else (lambda k: grain.end_of(k.window_start_us))
    )
    return [(k, list(s)) for k, s in finals.items() if end(k) <= before_us]


@pytest.mark.parametrize("midnight", [MIDNIGHT, MONTH_MIDNIGHT], ids=["day", "month"])
def test_a_state_saved_without_coarse_windows_rebuilds_them_exactly(midnight):
    state, minutes, days = _run_to_the_end(midnight, 7)
    # The same state as format 2 wrote it: no coarse windows.
    legacy = _as_format(state, 2, kept=())
    assert legacy.unseeded == {"hour", "day", "month"}
    assert legacy.coarse == {"hour": {}, "day": {}, "month": {}}
    before = legacy.closed_before_us
    seed_from_finer(legacy.coarse, SEEDED_FROM_MINUTES, _closed(minutes, before), legacy.windows,
                    before)  # fmt: skip
    seed_from_finer(legacy.coarse, (MONTH,), _closed(days, before, DAY), legacy.coarse["day"],
                    before)  # fmt: skip
    assert legacy.coarse == state.coarse and any(state.coarse["day"].values())
    assert any(state.coarse["month"].values())


@pytest.mark.parametrize("midnight", [MIDNIGHT, MONTH_MIDNIGHT], ids=["day", "month"])
def test_a_state_saved_without_month_windows_rebuilds_them_from_the_days(midnight):
    state, _, days = _run_to_the_end(midnight, 11)
    legacy = _as_format(state, 3, kept=("day", "hour"))
    assert legacy.unseeded == {"month"} and legacy.coarse["month"] == {}
    before = legacy.closed_before_us
    # Only the days of the open month count: the month before is closed and final.
    seed_from_finer(legacy.coarse, (MONTH,), _closed(days, before, DAY), legacy.coarse["day"],
                    before)  # fmt: skip
    assert legacy.coarse == state.coarse
    (month,) = {k.window_start_us for k in state.coarse["month"]}
    assert month == MONTH.start_of(before)
