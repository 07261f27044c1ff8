"""Hour, day and month rollups follow the minute rollups exactly (streams/processing/grains.py).

At every version a coarse window's partial and adjustments hold exactly the usage of its
minutes' partials and adjustments; a late piece adjusts a coarse window only once that
window has closed; and a state saved before coarse windows (or month windows) were kept
rebuilds them to exactly what they would have been.
"""

from __future__ import annotations

import json
import random
import zlib

import pytest

from core.units import US_PER_DAY, US_PER_MINUTE
from schemas import ReportCodec
from streams.contract import ProcessorSettings
from streams.processing.aggregate import RollupKey
from streams.processing.grains import (
    COARSE_GRAINS,
    DAY,
    HOUR,
    MONTH,
    SEEDED_FROM_MINUTES,
    seed_from_finer,
)
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.processor import PartitionProcessor
from streams.processing.state import PartitionState
from tests.factories import (
    MIDNIGHT,
    MONTH_MIDNIGHT,
    TICK_US,
    make_report,
    make_sample,
    messages,
    midnight_fleet,
)

CODEC = ReportCodec()
W = US_PER_MINUTE


def cut(frames, rng):
    at = 0
    while at < len(frames):
        step = rng.randint(1, 23)
        yield frames[at : at + step]
        at += step


def _plus(a, b):
    return [x + y for x, y in zip(a, b, strict=True)]


@pytest.mark.parametrize("midnight", [MIDNIGHT, MONTH_MIDNIGHT], ids=["day", "month"])
@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_coarse_window_holds_the_usage_of_its_minutes_at_every_version(fast, seed, midnight):
    kind = FastPartitionProcessor if fast else PartitionProcessor
    p = kind(PartitionState("usage", 5), ProcessorSettings(lateness_us=3 * W))
    # Stamped by the broker a day after the fleet's midnight, as a live topic would be.
    frames = messages(midnight_fleet(seed, midnight=midnight), timestamp_us=midnight + US_PER_DAY)
    minutes: dict[RollupKey, tuple[int, ...]] = {}  # each minute key's latest partial
    minutes_late: dict[RollupKey, list[int]] = {}  # each minute key's adjustments so far
    coarse = {grain.name: {} for grain in COARSE_GRAINS}  # latest partial per window
    coarse_late = {grain.name: {} for grain in COARSE_GRAINS}  # adjustments so far
    adjusted = {grain.name: 0 for grain in COARSE_GRAINS}
    late_minutes = 0
    seen = set()
    for batch in cut(frames, random.Random(seed)):
        out = p.process(batch)
        for row in out.rollups:
            minutes[row.key] = row.sums
        for a in out.adjustments:
            minutes_late[a.key] = _plus(minutes_late.get(a.key, [0] * 5), a.sums)
        for grain in COARSE_GRAINS:
            for row in out.coarse_rollups[grain.name]:
                assert row.version == out.applied_offset and row.partition == 5
                coarse[grain.name][row.key] = row.sums
            for a in out.coarse_adjustments[grain.name]:
                # Only a window closed by then is adjusted.
                assert grain.end_of(a.key.window_start_us) <= p.state.closed_before_us
                late = coarse_late[grain.name]
                late[a.key] = _plus(late.get(a.key, [0] * 5), a.sums)
            adjusted[grain.name] += len(out.coarse_adjustments[grain.name])
            # Partials and adjustments together: the usage of the window's minutes.
            expected: dict[RollupKey, list[int]] = {}
            for source in (minutes, minutes_late):
                for key, sums in source.items():
                    k = grain.key_of(key)
                    expected[k] = _plus(expected.get(k, [0] * 5), sums)
            got: dict[RollupKey, list[int]] = {}
            for source in (coarse[grain.name], coarse_late[grain.name]):
                for key, sums in source.items():
                    got[key] = _plus(got.get(key, [0] * 5), sums)
            assert got == expected, grain.name
        late_minutes += len(out.adjustments)
        seen |= {a.key.window_start_us for a in out.adjustments}
    # The fleet exercised what it is meant to: late usage, and both sides of midnight.
    assert late_minutes and adjusted["hour"] and adjusted["day"]
    # Late usage adjusts a coarse window only once it has closed: far fewer rows than the
    # minutes', and a month only where a month ended.
    assert adjusted["hour"] < late_minutes
    assert bool(adjusted["month"]) == (midnight == MONTH_MIDNIGHT)
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
    """A worker of the formats rebuilt here (every late piece late at every grain) fed a
    whole fleet across ``midnight``, and the final partial of every minute and day it wrote."""
    legacy = PartitionState("usage", 2, late_folds_after=None)
    p = FastPartitionProcessor(legacy, ProcessorSettings(lateness_us=3 * W))
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
    seed_from_finer(
        legacy.coarse, SEEDED_FROM_MINUTES, _closed(minutes, before), legacy.windows, before
    )
    seed_from_finer(
        legacy.coarse, (MONTH,), _closed(days, before, DAY), legacy.coarse["day"], before
    )
    assert legacy.coarse == state.coarse and any(state.coarse["day"].values())
    assert any(state.coarse["month"].values())


@pytest.mark.parametrize("midnight", [MIDNIGHT, MONTH_MIDNIGHT], ids=["day", "month"])
def test_a_state_saved_without_month_windows_rebuilds_them_from_the_days(midnight):
    state, _, days = _run_to_the_end(midnight, 11)
    legacy = _as_format(state, 3, kept=("day", "hour"))
    assert legacy.unseeded == {"month"} and legacy.coarse["month"] == {}
    before = legacy.closed_before_us
    # Only the days of the open month count: the month before is closed and final.
    seed_from_finer(
        legacy.coarse, (MONTH,), _closed(days, before, DAY), legacy.coarse["day"], before
    )
    assert legacy.coarse == state.coarse
    (month,) = {k.window_start_us for k in state.coarse["month"]}
    assert month == MONTH.start_of(before)


def _late_fleet() -> list[bytes]:
    """An on-time report an hour and ten minutes into a month, then three late ones: five
    minutes late (its hour still open), twenty minutes late (its hour closed, its day open)
    and from the month before (every coarse window closed), each on its own GPU."""
    t = MONTH_MIDNIGHT + 70 * W
    ticks = (t, t - 5 * W, t - 20 * W, MONTH_MIDNIGHT - 30 * W)
    return [
        CODEC.encode(
            make_report([make_sample(at, gpu_uuid=f"GPU-{seq}", energy_mj=seq + 1)], seq=seq)
        )
        for seq, at in enumerate(ticks)
    ]


@pytest.mark.parametrize("one_batch", [False, True])
@pytest.mark.parametrize("fast", [False, True])
def test_a_late_piece_joins_each_coarse_window_still_open_and_adjusts_only_the_closed(
    fast, one_batch
):
    """A report late for its minute is late for an hour, a day or a month only if that
    window had closed too: otherwise its usage is added to the open window's partial, so a
    month holds an adjustment per report late across the month's end, not per late report."""
    kind = FastPartitionProcessor if fast else PartitionProcessor
    p = kind(PartitionState("usage", 0), ProcessorSettings(lateness_us=2 * W))
    frames = messages(_late_fleet(), timestamp_us=MONTH_MIDNIGHT + US_PER_DAY)
    outs = [p.process(frames)] if one_batch else [p.process([f]) for f in frames]
    minute_late = {a.offset for out in outs for a in out.adjustments}
    assert minute_late == {1, 2, 3}
    coarse_late = {
        grain.name: sorted(
            (a.offset, a.key.window_start_us)
            for out in outs
            for a in out.coarse_adjustments[grain.name]
        )
        for grain in COARSE_GRAINS
    }
    november = MONTH.start_of(MONTH_MIDNIGHT - 1)
    assert coarse_late == {
        "hour": [(2, MONTH_MIDNIGHT), (3, MONTH_MIDNIGHT - 60 * W)],
        "day": [(3, MONTH_MIDNIGHT - US_PER_DAY)],
        "month": [(3, november)],
    }
    latest = {
        grain.name: {
            row.key.window_start_us: row.sums
            for out in outs
            for row in out.coarse_rollups[grain.name]
        }
        for grain in COARSE_GRAINS
    }
    energy = 3  # the sample_count is the last sum, energy the one before it
    assert latest["hour"][MONTH_MIDNIGHT + 60 * W][energy] == 1 + 2  # on time, 5 min late
    assert latest["day"][MONTH_MIDNIGHT][energy] == 1 + 2 + 3
    assert latest["month"][MONTH_MIDNIGHT][energy] == 1 + 2 + 3
    assert november not in latest["month"]
