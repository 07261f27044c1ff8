from meter import reasons
from meter.units import US_PER_MINUTE, US_PER_SECOND
from schemas import ReportCodec
from streams.aggregate import RollupKey, aggregate_reports
from streams.processor import PartitionProcessor, PartitionState, ProcessorSettings
from tests.factories import NOW_US, TICK_US, make_report, make_sample, messages

T0 = make_sample()["tick_start_us"]  # minute-aligned
W = US_PER_MINUTE
CODEC = ReportCodec()


def processor(lateness_us: int = 10 * W) -> PartitionProcessor:
    return PartitionProcessor(
        PartitionState(partition=3),
        ProcessorSettings(lateness_us=lateness_us),
        clock_us=lambda: NOW_US,
    )


def encoded(*reports) -> list[bytes]:
    return [CODEC.encode(r) for r in reports]


def test_batch_becomes_cumulative_rows_versioned_by_offset():
    #  minute 0: two GPUs x one tick       minute 1: one GPU x one tick
    r1 = make_report([make_sample(T0), make_sample(T0, gpu_uuid="GPU-b", gpu_index=1)], seq=0)
    r2 = make_report([make_sample(T0 + W)], seq=1)
    p = processor()
    out = p.process(messages(encoded(r1, r2), first_offset=100))
    assert out.accepted_reports == 2 and out.accepted_samples == 3 and not out.rejections
    rows = {row.key.window_start_us: row for row in out.rollups}
    assert rows[T0].sums == (2 * TICK_US, TICK_US, 0, 8_000_000, 2)
    assert rows[T0 + W].sums == (TICK_US, TICK_US // 2, 0, 4_000_000, 1)
    assert {row.version for row in out.rollups} == {101}
    assert {row.partition for row in out.rollups} == {3}

    # The next batch touches minute 1 only: its row carries the running total.
    out2 = p.process(messages(encoded(make_report([make_sample(T0 + W + TICK_US)], seq=2)), 0, 102))
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


def test_offsets_already_applied_are_skipped():
    p = processor()
    frames = encoded(make_report([make_sample(T0)]))
    p.process(messages(frames, first_offset=5))
    again = p.process(messages(frames, first_offset=5))
    assert again.skipped_replays == 1 and not again.rollups
    assert p.state.windows[RollupKey("aurora-labs", "H100", "sc1", T0)][0] == TICK_US


def test_windows_close_after_the_lateness_bound_and_late_reports_are_rejected():
    #  event time ----------------------------------------------------------->
    #  |T0 |T0+1m |  ...  |T0+12m: report ends here, watermark = 12m - 10m lateness
    #  windows T0 and T0+1m are closed; a report for T0 is late beyond the bound
    p = processor(lateness_us=10 * W)
    p.process(messages(encoded(make_report([make_sample(T0)]))))
    out = p.process(messages(encoded(make_report([make_sample(T0 + 12 * W - TICK_US)])), 0, 1))
    assert out.closed_windows == 1
    assert p.state.closed_before_us == T0 + 2 * W
    late = p.process(messages(encoded(make_report([make_sample(T0 + TICK_US)])), 0, 2))
    assert [r.reason for r in late.rejections] == [reasons.LATE_BEYOND_BOUND]
    assert not late.rollups
    ok = p.process(messages(encoded(make_report([make_sample(T0 + 2 * W)])), 0, 3))
    assert not ok.rejections and ok.rollups


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


def test_processor_matches_the_plain_aggregation():
    reports = [
        make_report([make_sample(T0 + i * TICK_US, energy_mj=i, tenant_id=t)], seq=i)
        for i, t in enumerate(["aurora-labs", "borealis-ai"] * 20)
    ]
    p = processor(lateness_us=10**12)
    p.process(messages(encoded(*reports)))
    assert p.state.windows == aggregate_reports(reports, W)
