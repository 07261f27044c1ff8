"""Simulated fleet → real Tansu broker → real Faust worker process → real ClickHouse."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer

from agent.fleet import FleetSpec, fleet_reports
from agent.publisher import ReportPublisher
from agent.totals import EmittedTotals
from core import reasons
from meter.runner import WorkerProcess, publish_fleet
from schemas import ReportCodec
from streams.host.progress import wait_until_consumed
from streams.output.dlq import parse_headers
from tests.factories import EXACT_AT_EVERY_GRAIN
from warehouse.totals import grain_differences, rollup_totals

pytestmark = pytest.mark.e2e


@pytest.fixture
def worker(worker_settings, tmp_path):
    process = WorkerProcess.start(worker_settings, tmp_path / "worker.log")
    yield process
    process.stop()


def _wait(settings, end_offsets, worker, timeout_s=240.0):
    def alive(done: int, target: int) -> None:
        assert worker.alive(), worker.log_path.read_text()[-3000:]

    wait_until_consumed(
        settings.bootstrap, settings.app_id, settings.topic, end_offsets, timeout_s, alive
    )


def test_fleet_totals_in_clickhouse_equal_what_was_emitted(worker_settings, worker, warehouse):
    spec = FleetSpec(nodes=50, gpus_per_node=8, tenants=3, reports_per_node=30, seed=11)
    emitted, end_offsets = publish_fleet(spec, worker_settings.bootstrap, worker_settings.topic)
    assert emitted.samples == 50 * 8 * 30 * 6
    assert len(end_offsets) == worker_settings.partitions  # keys spread over every partition
    _wait(worker_settings, end_offsets, worker)

    assert grain_differences(warehouse, emitted.by_key) == EXACT_AT_EVERY_GRAIN
    stored = rollup_totals(warehouse)
    stored = rollup_totals(warehouse)
    assert {k[0] for k in stored} >= {"aurora-labs", "borealis-ai", "cinder-research"}
    assert sum(r["sample_count"] for r in stored.values()) == emitted.samples
    assert warehouse.execute("SELECT count() FROM rejected_reports") == [(0,)]


BAD_NODE = "sc1-node-bad"


def _bad_frames(codec: ReportCodec, good_report: dict, n: int) -> dict[str, bytes]:
    """Three bad messages; the negative-counter one is report ``n`` of a node of its own."""
    unknown = bytearray(codec.encode(good_report))
    unknown[2:10] = bytes.fromhex("0123456789abcdef")
    negative = {**good_report, "node_id": BAD_NODE, "seq": n}
    negative["samples"] = [dict(s) for s in good_report["samples"]]
    negative["samples"][3]["busy_us"] = -1
    return {
        reasons.BAD_MAGIC: b"\x00\xffthis is not a usage report %d" % n,
        reasons.UNKNOWN_SCHEMA: bytes(unknown),
        reasons.NEGATIVE_COUNTER: codec.encode(negative),
    }


def test_bad_messages_go_to_the_dead_letter_topic_and_table_good_ones_stay_exact(
    worker_settings, worker, warehouse
):
    spec = FleetSpec(nodes=12, gpus_per_node=8, tenants=3, reports_per_node=6, seed=3)
    codec = ReportCodec()
    reports = list(fleet_reports(spec))
    emitted = EmittedTotals()
    bad_values: dict[bytes, str] = {}
    rounds = 0
    with ReportPublisher(worker_settings.bootstrap, worker_settings.topic) as publisher:
        for i, report in enumerate(reports):
            emitted.add_report(report)
            publisher.publish(report["node_id"].encode(), codec.encode(report))
            if i % 20 == 5:  # interleave the bad ones among good reports
                bad = _bad_frames(codec, reports[0], rounds)
                rounds += 1
                for reason, frame in bad.items():
                    bad_values[frame] = reason
                    publisher.publish(BAD_NODE.encode(), frame)
        publisher.flush()
        end_offsets = dict(publisher.end_offsets)
    bad_sent = publisher.sent - len(reports)
    _wait(worker_settings, end_offsets, worker)

    assert grain_differences(warehouse, emitted.by_key) == EXACT_AT_EVERY_GRAIN
    by_reason = dict(
        warehouse.execute("SELECT reason, count() FROM rejected_reports FINAL GROUP BY reason")
    )
    assert by_reason == {
        reasons.BAD_MAGIC: rounds,
        reasons.UNKNOWN_SCHEMA: rounds,
        reasons.NEGATIVE_COUNTER: rounds,
    }
    negative_rows = warehouse.execute(
        "SELECT node_id, seq, detail FROM rejected_reports FINAL WHERE reason = %(r)s ORDER BY seq",
        {"r": reasons.NEGATIVE_COUNTER},
    )
    assert [(node, seq) for node, seq, _ in negative_rows] == [(BAD_NODE, n) for n in range(rounds)]
    assert all("busy_us" in detail for *_, detail in negative_rows)
    assert warehouse.execute("SELECT count() FROM open_seq_gaps") == [(0,)]

    dead = _read_topic(worker_settings.bootstrap, worker_settings.dlq_topic, bad_sent)
    assert len(dead) == bad_sent
    for record in dead:
        headers = parse_headers(record.headers)
        assert bad_values[record.value] == headers["reason"]  # original bytes, untouched
        assert headers["topic"] == worker_settings.topic and int(headers["offset"]) >= 0
    assert worker.alive()


def _read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1_000,
    )
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def _node_report(node: str, boot: str, seq: int, ticks: range, gpus: int = 8) -> dict:
    """A report of ``node`` with one sample per GPU per 10-s tick of ``ticks``."""
    from tests.factories import TICK_US, make_report, make_sample

    base = make_sample()["tick_start_us"]
    samples = [
        make_sample(base + t * TICK_US, gpu_uuid=f"GPU-{node}-{g}", gpu_index=g)
        for t in ticks
        for g in range(gpus)
    ]
    return make_report(samples, seq=seq, node_id=node, boot_id=boot)


def test_overlapping_time_is_refused_and_boots_in_any_order_leave_no_false_gap(
    worker_settings, worker, warehouse
):
    """Holes an independent oracle found: a GPU's time billed twice, a gap left open by a
    late report of an earlier boot. Through the real broker, worker and ClickHouse."""
    spec = FleetSpec(nodes=6, gpus_per_node=4, tenants=2, reports_per_node=5, seed=9)
    good = list(fleet_reports(spec))
    boots = [  # boot a's seq 1 arrives after boot b's seq 2
        _node_report("sc1-boots", "boot-a", 0, range(0, 6)),
        _node_report("sc1-boots", "boot-b", 2, range(12, 18)),
        _node_report("sc1-boots", "boot-a", 1, range(6, 12)),
    ]
    ten_minutes = range(0, 60)
    overlapping = {
        "again": _node_report("sc1-twice", "boot-t", 1, ten_minutes),  # same time, next seq
        "within": _node_report("sc1-within", "boot-w", 0, range(0, 6)),
    }
    within = overlapping["within"]["samples"]
    within[8]["tick_start_us"] -= 5_000_000  # GPU 0's second tick starts in its first
    emitted = EmittedTotals()
    codec = ReportCodec()
    frames = []
    for report in [*good, *boots, _node_report("sc1-twice", "boot-t", 0, ten_minutes)]:
        emitted.add_report(report)
        frames.append((report["node_id"].encode(), codec.encode(report)))
    frames += [(r["node_id"].encode(), codec.encode(r)) for r in overlapping.values()]
    with ReportPublisher(worker_settings.bootstrap, worker_settings.topic) as publisher:
        for key, value in frames:
            publisher.publish(key, value)
        publisher.flush()
        end_offsets = dict(publisher.end_offsets)
    _wait(worker_settings, end_offsets, worker)

    assert grain_differences(warehouse, emitted.by_key) == EXACT_AT_EVERY_GRAIN
    rejected = warehouse.execute(
        "SELECT node_id, reason FROM rejected_reports FINAL ORDER BY node_id"
    )
    assert rejected == [
        ("sc1-twice", reasons.OVERLAPPING_TIME),
        ("sc1-within", reasons.OVERLAPPING_TIME),
    ]
    assert warehouse.execute("SELECT count() FROM open_seq_gaps") == [(0,)]
