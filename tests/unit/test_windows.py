import random

from core.units import US_PER_MINUTE, US_PER_SECOND
from core.windows import split_counters, split_points, window_start

W = US_PER_MINUTE
S = US_PER_SECOND


def test_window_start_floors_to_the_window():
    assert window_start(0, W) == 0
    assert window_start(W - 1, W) == 0
    assert window_start(W, W) == W


def test_aligned_tick_stays_in_one_window():
    #  window  |0                       |60 s
    #  tick            [10 s ---- 20 s)
    assert list(split_counters([10 * S, 7], 10 * S, 20 * S, W)) == [(0, [10 * S, 7])]


def test_straddling_tick_splits_by_time_and_sums_exactly():
    #  window  |0                |60 s              |120 s
    #  tick                [45 s ------ 75 s)
    parts = list(split_counters([30 * S, 1_000_001, 0], 45 * S, 75 * S, W))
    assert [w for w, _ in parts] == [0, W]
    assert parts[0][1][0] == 15 * S and parts[1][1][0] == 15 * S  # allocated splits by time
    assert parts[0][1][1] + parts[1][1][1] == 1_000_001  # odd energy: nothing lost
    assert parts[0][1][1] == 500_000  # floor(1_000_001 * 15 / 30)


def test_split_points_cover_every_touched_window():
    #  tick [50 s ---------------------------- 190 s) touches windows 0, 60, 120, 180
    assert split_points(50 * S, 190 * S, W) == [
        (0, 10 * S),
        (W, 70 * S),
        (2 * W, 130 * S),
        (3 * W, 140 * S),
    ]


def test_split_is_exact_for_random_values():
    rng = random.Random(5)
    for _ in range(2_000):
        start = rng.randrange(0, 10 * W)
        end = start + rng.randrange(1, 5 * W)
        values = [rng.randrange(0, 2**62) for _ in range(4)]
        parts = list(split_counters(values, start, end, W))
        assert [sum(p[i] for _, p in parts) for i in range(4)] == values
        assert all(x >= 0 for _, p in parts for x in p)
        assert parts == list(split_counters(values, start, end, W))  # deterministic
