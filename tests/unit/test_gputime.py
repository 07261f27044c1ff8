"""The per-GPU metered time against a plain set of metered time units."""

from __future__ import annotations

import random

from streams.processing.gputime import FORGET_STEP_US, GpuTime

U = FORGET_STEP_US // 10  # test times are in units of 6 minutes


def _tick(start: int, end: int, gpu: str = "GPU-a") -> dict:
    return {"gpu_uuid": gpu, "tick_start_us": start * U, "tick_end_us": end * U}


def _units(flat: list[int]) -> set[int]:
    return {u for a, b in zip(flat[::2], flat[1::2], strict=True) for u in range(a // U, b // U)}


def test_ranges_merge_and_overlaps_are_found_on_either_side_of_a_hole():
    t = GpuTime()
    t.record([_tick(0, 10), _tick(10, 20), _tick(40, 50)], horizon_us=0)
    assert t.ranges == {"GPU-a": [0, 20 * U, 40 * U, 50 * U]}
    assert t.overlap([_tick(20, 40)], 0) is None  # fills the hole exactly
    found = t.overlap([_tick(30, 41)], 0)
    assert found is not None and found.metered == (40 * U, 50 * U)
    assert t.overlap([_tick(19, 25)], 0).metered == (0, 20 * U)  # type: ignore[union-attr]
    t.record([_tick(20, 40)], 0)
    assert t.ranges == {"GPU-a": [0, 50 * U]}


def test_against_a_set_of_time_units():
    rng = random.Random(2)
    for _ in range(200):
        t, metered = GpuTime(), set()
        for _ in range(40):
            start = rng.randrange(0, 200)
            tick = _tick(start, start + rng.randrange(1, 15))
            clash = any(u in metered for u in range(start, tick["tick_end_us"] // U))
            assert (t.overlap([tick], 0) is not None) == clash
            if not clash:
                t.record([tick], 0)
                metered.update(range(start, tick["tick_end_us"] // U))
            flat = t.ranges.get("GPU-a", [])
            assert flat == sorted(flat) and len(set(flat)) == len(flat)  # merged, disjoint
            assert _units(flat) == metered
        horizon = rng.randrange(0, 220) * U
        t.forget_before(horizon)
        cut = horizon - horizon % FORGET_STEP_US  # at the hour
        assert _units(t.ranges.get("GPU-a", [])) == {u for u in metered if u * U >= cut}


def test_time_before_the_horizon_is_neither_checked_nor_recorded():
    t = GpuTime()
    t.record([_tick(0, 100)], horizon_us=50 * U)
    assert t.ranges == {"GPU-a": [50 * U, 100 * U]}
    assert t.overlap([_tick(10, 60)], horizon_us=60 * U) is None
    assert t.overlap([_tick(10, 61)], horizon_us=60 * U) is not None
