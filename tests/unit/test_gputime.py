"""The per-GPU metered time against a plain set of metered microseconds."""

from __future__ import annotations

import random

from streams.gputime import GpuTime


def _tick(start: int, end: int, gpu: str = "GPU-a") -> dict:
    return {"gpu_uuid": gpu, "tick_start_us": start, "tick_end_us": end}


def _microseconds(flat: list[int]) -> set[int]:
    return {us for a, b in zip(flat[::2], flat[1::2], strict=True) for us in range(a, b)}


def test_ranges_merge_and_overlaps_are_found_on_either_side_of_a_hole():
    t = GpuTime()
    t.record([_tick(0, 10), _tick(10, 20), _tick(40, 50)], horizon_us=0)
    assert t.ranges == {"GPU-a": [0, 20, 40, 50]}
    assert t.overlap([_tick(20, 40)], 0) is None  # fills the hole exactly
    found = t.overlap([_tick(30, 41)], 0)
    assert found is not None and found.metered == (40, 50)
    assert t.overlap([_tick(19, 25)], 0).metered == (0, 20)  # type: ignore[union-attr]
    t.record([_tick(20, 40)], 0)
    assert t.ranges == {"GPU-a": [0, 50]}


def test_against_a_set_of_microseconds():
    rng = random.Random(2)
    for _ in range(200):
        t, metered = GpuTime(), set()
        for _ in range(40):
            start = rng.randrange(0, 200)
            tick = _tick(start, start + rng.randrange(1, 15))
            clash = any(us in metered for us in range(tick["tick_start_us"], tick["tick_end_us"]))
            assert (t.overlap([tick], 0) is not None) == clash
            if not clash:
                t.record([tick], 0)
                metered.update(range(tick["tick_start_us"], tick["tick_end_us"]))
            flat = t.ranges.get("GPU-a", [])
            assert flat == sorted(flat) and len(set(flat)) == len(flat)  # merged, disjoint
            assert _microseconds(flat) == metered
        horizon = rng.randrange(0, 220)
        t.forget_before(horizon)
        kept = t.ranges.get("GPU-a", [])
        assert _microseconds(kept) == {us for us in metered if us >= horizon}


def test_time_before_the_horizon_is_neither_checked_nor_recorded():
    t = GpuTime()
    t.record([_tick(0, 100)], horizon_us=50)
    assert t.ranges == {"GPU-a": [50, 100]}
    assert t.overlap([_tick(10, 60)], horizon_us=60) is None
    assert t.overlap([_tick(10, 61)], horizon_us=60) is not None
