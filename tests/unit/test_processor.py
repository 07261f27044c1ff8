import random

import pytest

from core import reasons
from core.units import US_PER_MINUTE, US_PER_SECOND
from schemas import ReportCodec
from streams.contract import ProcessorSettings
from streams.processing.aggregate import RollupKey, aggregate_reports
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.processor import PartitionProcessor
from streams.processing.state import PartitionState
from tests.factories import TICK_US, make_report, make_sample, messages

T0 = make_sample()["tick_start_us"]  # minute-aligned
W = US_PER_MINUTE
CODEC = ReportCodec()


def processor(lateness_us: int = 10 * W) -> PartitionProcessor:
    return PartitionProcessor(
        PartitionState("usage", partition=3), ProcessorSettings(lateness_us=lateness_us)
    )


def encoded(*reports) -> list[bytes]:
    return [CODEC.encode(r) for r in reports]


def test_batch_becomes_cumulative_rows_versioned_by_offset():
    #  minute 0: two GPUs x one tick       minute 1: one GPU x one tick (a ledger row per GPU)
    r1 = make_report([make_sample(T0), make_sample(T0, gpu_uuid="GPU-b", gpu_index=1)], seq=0)
    r2 = make_report([make_sample(T0 + W)], seq=1)
    p = processor()
    out = p.process(messages(encoded(r1, r2), first_offset=100))
    assert out.accepted_reports == 2 and out.accepted_samples == 3 and not out.rejections
    assert out.ledger_rows == 3 and out.ledger_samples == 3 and out.applied_offset == 101
    rows = {row.key.window_start_us: row for row in out.rollups}
    assert rows[T0].sums == (2 * TICK_US, TICK_US, 0, 8_000_000, 2)
    assert rows[T0 + W].sums == (TICK_US, TICK_US // 2, 0, 4_000_000, 1)
    assert {row.version for row in out.rollups} == {101}
    assert {row.partition for row in out.rollups} == {3}

    # The next batch touches minute 1 only: its row carries the running total.
    r3 = make_report([make_sample(T0 + W + TICK_US)], seq=2)
    out2 = p.process(messages(encoded(r3), 0, 102))
    assert [(r.key.window_start_us, r.sums[0], r.version) for r in out2.rollups] == [
        (T0 + W, 2 * TICK_US, 102)
    ]


def test_rejected_messages_do_not_touch_the_sums_and_carry_identity():
    good = make_report([make_sample(T0)])
    bad = make_report([make_sample(T0, energy_mj=-1)], seq=1)
    out = processor().process(messages([b"garbage", *encoded(good, bad)]))
    assert [(r.reason, r.message.offset) for r in out.rejections] == [
        (reasons.BAD_MAGIC, 0),
        (reasons.NEGATIVE_COUNTER, 2),
    ]
    assert out.rejections[1].node_id == good["node_id"] and out.rejections[1].seq == 1
    assert [r.sums[0] for r in out.rollups] == [TICK_US]
    assert out.rollups[0].version == 2  # the offset of the last message, rejected or not
    assert not out.gap_rows  # a rejected seq is accounted for, not missing


def test_offsets_already_applied_are_skipped():
    p = processor()
    frames = encoded(make_report([make_sample(T0)]))
    p.process(messages(frames, first_offset=5))
    again = p.process(messages(frames, first_offset=5))
    assert again.skipped_replays == 1 and not again.rollups and not again.ledger
    assert p.state.windows[RollupKey("aurora-labs", "H100", "sc1", T0)][0] == TICK_US


def test_duplicate_reports_at_new_offsets_are_counted_not_metered():
    p = processor()
    frames = encoded(*(make_report([make_sample(T0 + i * TICK_US)], seq=i) for i in range(3)))
    p.process(messages(frames))
    out = p.process(messages([frames[1], frames[0], frames[1]], first_offset=3))
    assert out.duplicate_reports == 3 and not out.ledger and not out.rollups
    assert p.state.counters["duplicate_reports"] == 3
    assert p.state.windows[RollupKey("aurora-labs", "H100", "sc1", T0)][0] == 3 * TICK_US


def test_gaps_open_and_late_reports_close_them():
    p = processor()
    reports = [make_report([make_sample(T0 + i * TICK_US)], seq=i) for i in range(6)]
    out = p.process(messages(encoded(reports[0], reports[3], reports[5])))
    gaps = [(g.first_missing, g.last_missing, g.is_open) for g in out.gap_rows]
    assert gaps == [(1, 2, True), (4, 4, True)]
    assert p.state.open_gaps() == 2
    out = p.process(messages(encoded(reports[1], reports[4], reports[2]), first_offset=3))
    gaps = [(g.first_missing, g.last_missing, g.is_open, g.version) for g in out.gap_rows]
    # seq 1 closes row "1" and opens [2, 2]; seq 4 closes [4, 4]; seq 2 closes row "2"
    assert gaps == [(2, 2, True, 3), (1, 1, False, 3), (4, 4, False, 4), (2, 2, False, 5)]
    assert p.state.open_gaps() == 0 and out.accepted_reports == 3


def test_late_usage_becomes_an_adjustment_for_its_window():
    #  event time ----------------------------------------------------------->
    #  |T0 |T0+1m |  ...  |T0+12m: report ends here; closed before 12m - 10m = T0+2m
    #  a report for T0 arriving now is metered as an adjustment of window T0
    p = processor(lateness_us=10 * W)
    p.process(messages(encoded(make_report([make_sample(T0)]))))
    p.process(messages(encoded(make_report([make_sample(T0 + 12 * W - TICK_US)], seq=1)), 0, 1))
    assert p.state.closed_before_us == T0 + 2 * W
    assert RollupKey("aurora-labs", "H100", "sc1", T0) not in p.state.windows
    late = p.process(messages(encoded(make_report([make_sample(T0 + TICK_US)], seq=2)), 0, 2))
    assert not late.rejections and not late.rollups and late.late_reports == 1
    assert [(a.key.window_start_us, a.offset, a.sums[0], a.sums[4]) for a in late.adjustments] == [
        (T0, 2, TICK_US, 1)
    ]
    assert late.ledger_rows == 1 and late.ledger[-1] == 1  # the last column: late


def test_a_window_closed_mid_batch_still_gets_its_final_row():
    p = processor(lateness_us=0)
    r1 = make_report([make_sample(T0)])
    r2 = make_report([make_sample(T0 + 5 * W)], seq=1)  # closes T0 within the batch
    out = p.process(messages(encoded(r1, r2)))
    assert [(r.key.window_start_us, r.sums[0]) for r in out.rollups] == [
        (T0, TICK_US),
        (T0 + 5 * W, TICK_US),
    ]


def test_straddling_sample_is_split_and_counted_once():
    #  |T0            |T0+1m
    #        [50 s ---------- 70 s)   20 s allocated: 10 s + 10 s
    sample = make_sample(T0 + 50 * US_PER_SECOND, allocated_us=20 * US_PER_SECOND)
    sample["tick_end_us"] = T0 + 70 * US_PER_SECOND
    sample["busy_us"] = 3
    out = processor().process(messages(encoded(make_report([sample]))))
    by_window = {r.key.window_start_us: r.sums for r in out.rollups}
    assert by_window[T0][0] == by_window[T0 + W][0] == 10 * US_PER_SECOND
    assert by_window[T0][1] + by_window[T0 + W][1] == 3
    assert by_window[T0][4] + by_window[T0 + W][4] == 1


def test_far_future_is_judged_against_the_record_timestamp_not_the_wall_clock():
    report = make_report([make_sample(T0)])
    early = processor().process(messages(encoded(report), timestamp_us=T0 - 3600 * US_PER_SECOND))
    assert [r.reason for r in early.rejections] == [reasons.FUTURE_TIMESTAMP]
    assert not processor().process(messages(encoded(report), timestamp_us=T0)).rejections


def _final_rows(outcomes):
    rows: dict = {}
    for out in outcomes:
        for r in out.rollups:
            if r.key not in rows or rows[r.key][0] <= r.version:
                rows[r.key] = (r.version, r.sums)
    adjustments = {(a.key, a.offset): a.sums for out in outcomes for a in out.adjustments}
    return {k: v[1] for k, v in rows.items()}, adjustments


def test_output_does_not_depend_on_where_batches_are_cut():
    rng = random.Random(4)
    reports = []
    for i in range(120):  # out-of-order event times, duplicates and gaps
        start = T0 + rng.randrange(0, 40) * TICK_US
        reports.append(make_report([make_sample(start, energy_mj=i)], seq=rng.randrange(0, 90)))
    frames = messages(encoded(*reports))
    reference = processor(lateness_us=5 * W)
    ref = _final_rows([reference.process(frames)])
    # The value of each key after every single offset: what any row at version V must hold.
    one_by_one, history = processor(lateness_us=5 * W), {}
    for frame in frames:
        for r in one_by_one.process([frame]).rollups:
            history.setdefault(r.key, []).append((r.version, r.sums))

    def prefix_value(key, version):
        return [sums for v, sums in history[key] if v <= version][-1]

    for _ in range(20):
        p, outcomes, at = processor(lateness_us=5 * W), [], 0
        while at < len(frames):
            step = rng.randint(1, 17)
            outcomes.append(p.process(frames[at : at + step]))
            at += step
        assert _final_rows(outcomes) == ref
        assert p.state.to_snapshot() == reference.state.to_snapshot()
        for out in outcomes:  # a replay with other cuts rewrites only true prefix values
            for r in out.rollups:
                assert r.sums == prefix_value(r.key, r.version)


def test_state_snapshot_round_trips_and_resumes_identically():
    reports = [make_report([make_sample(T0 + i * TICK_US)], seq=i * 2) for i in range(30)]
    frames = messages(encoded(*reports))
    straight = processor()
    straight.process(frames)
    first = processor()
    first.process(frames[:11])
    resumed = PartitionProcessor(
        PartitionState.from_snapshot(first.state.to_snapshot()), first.settings
    )
    resumed.process(frames)  # a replay from an earlier offset: the first 11 are skipped
    assert resumed.state == straight.state


def test_processor_matches_the_plain_aggregation():
    reports = [
        make_report([make_sample(T0 + i * TICK_US, energy_mj=i, tenant_id=t)], seq=i)
        for i, t in enumerate(["aurora-labs", "borealis-ai"] * 20)
    ]
    p = processor(lateness_us=10**12)
    p.process(messages(encoded(*reports)))
    assert p.state.windows == aggregate_reports(reports, W)


def _open_gap_seqs(state: PartitionState, node_id: str) -> list[int]:
    """Every seq of ``node_id`` that an open gap of any of its boots names, repeats kept."""
    return sorted(
        seq
        for (node, _), tracker in state.nodes.items()
        if node == node_id
        for lo, hi, _ in tracker.gaps
        for seq in range(lo, hi + 1)
    )


def test_a_late_report_of_an_earlier_boot_closes_the_gap_the_next_boot_opened():
    node = make_report()["node_id"]
    boot_a, boot_b = "boot-a", "boot-b"
    a0, a1 = (make_report([make_sample(T0 + i * TICK_US)], seq=i, boot_id=boot_a) for i in (0, 1))
    b2 = make_report([make_sample(T0 + 2 * TICK_US)], seq=2, boot_id=boot_b)
    p = processor()
    out = p.process(messages(encoded(a0, b2, a1)))
    assert out.accepted_reports == 3 and out.duplicate_reports == 0
    assert _open_gap_seqs(p.state, node) == []
    closed = [g for g in out.gap_rows if not g.is_open]
    assert [(g.boot_id, g.first_missing) for g in closed] == [(boot_b, 1)]


def test_any_order_of_arrival_leaves_open_exactly_the_seqs_never_delivered():
    """Three boots of one node that continue one another's seqs (as agents do), each
    report delivered in a random order or never; a retry now and then."""
    node = make_report()["node_id"]
    owner = {seq: "boot-a" if seq < 5 else "boot-b" if seq < 9 else "boot-c" for seq in range(14)}
    rng = random.Random(16)
    for _ in range(300):
        delivered = [seq for seq in owner if rng.random() < 0.7]
        order = delivered + rng.sample(delivered, min(2, len(delivered)))  # retries
        rng.shuffle(order)
        reports = [
            make_report([make_sample(T0 + seq * TICK_US)], seq=seq, boot_id=owner[seq])
            for seq in order
        ]
        p = processor()
        cut = rng.randrange(len(reports) + 1)
        frames = messages(encoded(*reports))
        p.process(frames[:cut])
        p = PartitionProcessor(PartitionState.from_snapshot(p.state.to_snapshot()), p.settings)
        p.process(frames[cut:])
        top = max(delivered, default=-1)
        expected = [seq for seq in range(top + 1) if seq not in delivered]
        assert _open_gap_seqs(p.state, node) == expected, (order, cut)
        assert p.state.counters["accepted_reports"] == len(delivered), order
        assert p.state.counters["duplicate_reports"] == len(order) - len(delivered), order


def test_a_boot_that_restarts_its_seqs_keeps_its_reports_apart():
    """An agent that lost its seq file starts again at 0: nothing is a duplicate."""
    first = [make_report([make_sample(T0 + i * TICK_US)], seq=i, boot_id="old") for i in range(4)]
    again = [
        make_report([make_sample(T0 + (10 + i) * TICK_US)], seq=i, boot_id="new") for i in range(3)
    ]
    p = processor()
    out = p.process(messages(encoded(*first, *again)))
    assert out.accepted_reports == 7 and out.duplicate_reports == 0
    assert p.state.open_gaps() == 0


def _eight_gpus_ten_ticks(seq: int = 0) -> dict:
    samples = [
        make_sample(T0 + t * TICK_US, gpu_uuid=f"GPU-{g}", gpu_index=g)
        for t in range(10)
        for g in range(8)
    ]
    return make_report(samples, seq=seq)


@pytest.mark.parametrize("kind", [PartitionProcessor, FastPartitionProcessor])
def test_a_zero_length_tick_without_usage_meters_nothing_and_keeps_the_report(kind):
    report = _eight_gpus_ten_ticks()
    empty = report["samples"][37]
    empty.update(tick_end_us=empty["tick_start_us"], allocated_us=0, busy_us=0, energy_mj=0)
    p = kind(PartitionState("usage", 0), ProcessorSettings())
    out = p.process(messages(encoded(report)))
    assert not out.rejections and out.accepted_reports == 1
    assert out.accepted_samples == out.ledger_samples == 79
    expected = aggregate_reports(
        [{**report, "samples": report["samples"][:37] + report["samples"][38:]}], W
    )
    assert {r.key: list(r.sums) for r in out.rollups} == expected


@pytest.mark.parametrize("kind", [PartitionProcessor, FastPartitionProcessor])
def test_a_zero_length_tick_with_usage_is_refused_with_its_own_reason(kind):
    report = _eight_gpus_ten_ticks()
    report["samples"][37]["tick_end_us"] = report["samples"][37]["tick_start_us"]
    out = kind(PartitionState("usage", 0), ProcessorSettings()).process(messages(encoded(report)))
    assert [r.reason for r in out.rejections] == [reasons.EMPTY_TICK_WITH_USAGE]


@pytest.mark.parametrize("kind", [PartitionProcessor, FastPartitionProcessor])
def test_overlapping_time_of_one_gpu_is_metered_once(kind):
    """Within one report, across reports (other seqs, other boots), and against a hole
    that a late report fills exactly."""
    minute = [make_sample(T0 + i * TICK_US) for i in range(6)]
    first = make_report(minute, seq=0)
    long_tick = 6 * TICK_US
    overlapping_within = make_report(
        [
            make_sample(T0 + 60 * TICK_US, tick_end_us=T0 + 60 * TICK_US + long_tick),
            make_sample(T0 + 63 * TICK_US, tick_end_us=T0 + 63 * TICK_US + long_tick),
        ],
        seq=1,
    )
    again = make_report(minute[3:], seq=2)  # the same GPU's time under another seq
    other_boot = make_report(minute[:1], seq=0, boot_id="another-boot")
    later = make_report([make_sample(T0 + 20 * TICK_US)], seq=4)
    fills_hole = make_report([make_sample(T0 + 10 * TICK_US)], seq=3)
    into_hole = make_report(
        [make_sample(T0 + 15 * TICK_US, tick_end_us=T0 + 21 * TICK_US, allocated_us=TICK_US)],
        seq=5,
    )
    p = kind(PartitionState("usage", 0), ProcessorSettings())
    frames = encoded(first, overlapping_within, again, other_boot, later, fills_hole, into_hole)
    out = p.process(messages(frames))
    assert [(r.message.offset, r.reason) for r in out.rejections] == [
        (1, reasons.OVERLAPPING_TIME),
        (2, reasons.OVERLAPPING_TIME),
        (3, reasons.OVERLAPPING_TIME),
        (6, reasons.OVERLAPPING_TIME),
    ]
    assert "already metered" in out.rejections[1].detail
    assert out.accepted_reports == 3 and out.accepted_samples == 8
    assert sum(r.sums[0] for r in out.rollups) == 8 * TICK_US
    assert p.state.open_gaps() == 0  # refused, but accounted for: no seq is missing


@pytest.mark.parametrize("kind", [PartitionProcessor, FastPartitionProcessor])
def test_overlap_is_checked_across_batches_and_a_restored_state(kind):
    first = make_report([make_sample(T0)], seq=0)
    again = make_report([make_sample(T0 + TICK_US // 2)], seq=1)
    p = kind(PartitionState("usage", 0), ProcessorSettings())
    p.process(messages(encoded(first)))
    restored = kind(PartitionState.from_snapshot(p.state.to_snapshot()), ProcessorSettings())
    out = restored.process(messages(encoded(again), first_offset=1))
    assert [r.reason for r in out.rejections] == [reasons.OVERLAPPING_TIME]


def test_time_older_than_the_memory_is_not_checked_and_is_forgotten():
    hour = 60 * W
    settings = ProcessorSettings(lateness_us=W, time_memory_us=hour)
    p = PartitionProcessor(PartitionState("usage", 0), settings)
    old = make_report([make_sample(T0)], seq=0)
    now = make_report([make_sample(T0 + 3 * hour)], seq=1)
    p.process(messages(encoded(old, now)))
    assert list(p.state.gpu_time.ranges.values()) == [[T0 + 3 * hour, T0 + 3 * hour + TICK_US]]
    very_late = make_report([make_sample(T0)], seq=0, boot_id="another-boot")
    out = p.process(messages(encoded(very_late), first_offset=2))
    assert not out.rejections and out.accepted_reports == 1  # metered: too old to check


def test_which_boot_owns_overlapping_lead_ins_does_not_depend_on_a_restore():
    """A seq reset can leave two lead-ins holding one seq; the owner is chosen by value."""

    def report(boot: str, seq: int, tick: int) -> dict:
        return make_report([make_sample(T0 + tick * TICK_US)], seq=seq, boot_id=boot)

    first = [report("zz-a", 5, 0), report("zz-a", 10, 1), report("aa-reset", 7, 2)]
    later = [report("mm-z", 3, 3)]
    straight = processor()
    straight.process(messages(encoded(*first, *later)))
    part = processor()
    part.process(messages(encoded(*first)))
    resumed = PartitionProcessor(
        PartitionState.from_snapshot(part.state.to_snapshot()), part.settings
    )
    resumed.process(messages(encoded(*later), first_offset=3))
    assert resumed.state.to_snapshot() == straight.state.to_snapshot()
