"""Fault tests of the exactly-once design, against the real broker and ClickHouse.

Each test publishes a simulated fleet through a real worker process (or two), injects a
fault, and then requires every (tenant, sku, window) total in the rollups and in the
ledger to equal what the fleet emitted, exactly.
"""

from __future__ import annotations

import random
import time

import pytest

from agent.fleet import FleetSpec, fleet_reports
from agent.totals import EmittedTotals
from meter.runner import WorkerProcess
from tests.e2e.harness import (
    BackgroundPublisher,
    assert_exact,
    drain,
    encode_all,
    meter_backlog,
    progress,
)

pytestmark = pytest.mark.e2e


def test_worker_killed_with_sigkill_five_times_totals_exact(worker_settings, warehouse, tmp_path):
    import dataclasses

    # A snapshot every second, so that kills land before, between and after them: each
    # restart replays what followed its partitions' last snapshot.
    worker_settings = dataclasses.replace(worker_settings, snapshot_interval_s=1.0)
    spec = FleetSpec(nodes=50, gpus_per_node=8, tenants=3, reports_per_node=84, seed=21)
    assert spec.samples >= 200_000
    emitted = EmittedTotals()
    publisher = BackgroundPublisher(
        worker_settings, encode_all(fleet_reports(spec), emitted), per_second=80
    )
    rng = random.Random(2026)
    worker = WorkerProcess.start(worker_settings, tmp_path / "worker-0.log")
    publisher.start()
    kills = kills_while_processing = 0
    deadline = time.monotonic() + 300
    try:
        while kills_while_processing < 5 or publisher.is_alive():
            assert time.monotonic() < deadline, (
                f"only {kills_while_processing} kills while processing"
            )
            # Let the new worker join and start on the backlog that built up while it was
            # down, then kill it at a random moment of its work (mid-batch, mid-write, idle).
            waited = time.monotonic()
            while "resuming after offset" not in worker.log_path.read_text():
                if time.monotonic() - waited > 20:
                    break
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, 3.0))
            was_processing = "resuming after offset" in worker.log_path.read_text()
            worker.kill()
            kills += 1
            kills_while_processing += was_processing
            worker = WorkerProcess.start(worker_settings, tmp_path / f"worker-{kills}.log")
        drain(worker_settings, publisher.finish(), [worker])
    finally:
        worker.stop()
    assert kills_while_processing >= 5
    assert_exact(warehouse, emitted)
    counters = progress(warehouse)
    assert counters["accepted_samples"] == emitted.samples == spec.samples
    assert counters["duplicate_reports"] == counters["rejected_reports"] == 0
    assert counters["open_gaps"] == 0


def test_two_workers_share_partitions_one_is_killed_totals_exact(
    worker_settings, warehouse, tmp_path
):
    spec = FleetSpec(nodes=40, gpus_per_node=8, tenants=3, reports_per_node=40, seed=22)
    emitted = EmittedTotals()
    publisher = BackgroundPublisher(
        worker_settings, encode_all(fleet_reports(spec), emitted), per_second=100
    )
    workers = [WorkerProcess.start(worker_settings, tmp_path / f"w{i}.log") for i in (0, 1)]
    publisher.start()
    try:
        deadline = time.monotonic() + 60
        while not all("resuming after offset" in w.log_path.read_text() for w in workers):
            assert time.monotonic() < deadline, "both workers never got partitions"
            time.sleep(0.5)
        time.sleep(3)
        workers[0].kill()  # the survivor must take over its partitions
        drain(worker_settings, publisher.finish(), workers)
    finally:
        for w in workers:
            w.stop()
    assert_exact(warehouse, emitted)
    assert progress(warehouse)["accepted_samples"] == spec.samples


def test_duplicates_near_and_far_and_a_republished_block_are_counted_not_metered(
    worker_settings, warehouse, tmp_path
):
    import dataclasses
    import urllib.request

    from stack.process import free_port

    settings = dataclasses.replace(worker_settings, metrics_port=free_port())
    spec = FleetSpec(nodes=30, gpus_per_node=8, tenants=3, reports_per_node=20, seed=23)
    emitted = EmittedTotals()
    frames = list(encode_all(fleet_reports(spec), emitted))
    rng = random.Random(7)
    stream, far = [], []
    for frame in frames:
        stream.append(frame)
        roll = rng.random()
        if roll < 0.08:
            stream.append(frame)  # a retry right behind the original
        elif roll < 0.16:
            far.append(frame)  # a retry long after, from a recovering spool
    stream.extend(far)
    duplicates = len(stream) - len(frames)
    assert duplicates >= 0.10 * len(frames)

    worker = WorkerProcess.start(settings, tmp_path / "worker.log")
    try:
        publisher = BackgroundPublisher(settings, stream)
        publisher.start()
        drain(settings, publisher.finish(), [worker])
        block = frames[100:300]  # already committed: republished as a block
        again = BackgroundPublisher(settings, block)
        again.start()
        drain(settings, again.finish(), [worker])
        duplicates += len(block)
        metrics_text = (
            urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10)
            .read()
            .decode()
        )
    finally:
        worker.stop()
    assert_exact(warehouse, emitted)
    assert progress(warehouse)["duplicate_reports"] == duplicates
    scraped = sum(
        int(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("meter_reports_duplicate_total{")
    )
    assert scraped == duplicates
    # Valid reports and their retries: the kernels, not the twin, judged every batch.
    assert "\nmeter_batches_to_twin_total 0\n" in metrics_text
    assert "meter_partition_lag{" in metrics_text
    stages = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("meter_batch_stage_seconds_total{")
    }
    assert set(stages) == {"fetch", "prepare", "wait_for_write", "write"}
    assert stages["prepare"] > 0 and stages["write"] > 0


def test_replay_from_offset_zero_by_fresh_groups_changes_nothing(
    worker_settings, warehouse, tmp_path
):
    import dataclasses

    spec = FleetSpec(nodes=30, gpus_per_node=8, tenants=3, reports_per_node=15, seed=24)
    emitted = EmittedTotals()
    publisher = BackgroundPublisher(worker_settings, encode_all(fleet_reports(spec), emitted))
    worker = WorkerProcess.start(worker_settings, tmp_path / "first.log")
    publisher.start()
    end_offsets = publisher.finish()
    try:
        drain(worker_settings, end_offsets, [worker])
    finally:
        worker.stop()
    assert_exact(warehouse, emitted)
    before = progress(warehouse)

    # 1. A new consumer group reads the topic from offset zero: the stored states make it
    #    skip everything already applied.
    # 2. The same with the stored states wiped: it reprocesses everything and rewrites
    #    identical rows, versions included.
    for name, wipe_state in (("replay-a", False), ("replay-b", True)):
        if wipe_state:
            warehouse.execute("TRUNCATE TABLE partition_state")
            warehouse.execute("TRUNCATE TABLE partition_snapshots")
        replay = dataclasses.replace(worker_settings, app_id=f"{worker_settings.app_id}-{name}")
        meter_backlog(replay, end_offsets, tmp_path / f"{name}.log", warehouse, emitted)
        assert progress(warehouse) == before, name


def test_clickhouse_restart_mid_run_worker_waits_and_loses_nothing(
    local_stack, worker_settings, warehouse, tmp_path
):
    spec = FleetSpec(nodes=40, gpus_per_node=8, tenants=3, reports_per_node=30, seed=25)
    emitted = EmittedTotals()
    publisher = BackgroundPublisher(
        worker_settings, encode_all(fleet_reports(spec), emitted), per_second=100
    )
    worker = WorkerProcess.start(worker_settings, tmp_path / "worker.log")
    publisher.start()
    try:
        time.sleep(5)
        local_stack.restart_clickhouse(pause_s=8)
        drain(worker_settings, publisher.finish(), [worker])
    finally:
        worker.stop()
    assert_exact(warehouse, emitted)
    assert "ClickHouse unreachable" in worker.log_path.read_text()


def test_reports_beyond_the_lateness_bound_become_adjustments_and_still_add_up(
    worker_settings, warehouse, tmp_path
):
    import dataclasses

    from core.units import US_PER_SECOND
    from streams.contract import ProcessorSettings

    settings = dataclasses.replace(
        worker_settings, processor=ProcessorSettings(lateness_us=120 * US_PER_SECOND)
    )
    spec = FleetSpec(nodes=40, gpus_per_node=8, tenants=3, reports_per_node=20, seed=26)
    emitted = EmittedTotals()
    reports = list(fleet_reports(spec))
    # Four nodes were cut off for their first 8 reports; their spools send them at the end.
    held = [
        r for r in reports if r["node_id"] in {spec.node_id(n) for n in range(4)} and r["seq"] < 8
    ]
    on_time = [r for r in reports if r not in held]
    worker = WorkerProcess.start(settings, tmp_path / "worker.log")
    try:
        for batch in (on_time, held):
            publisher = BackgroundPublisher(settings, encode_all(batch, emitted))
            publisher.start()
            drain(settings, publisher.finish(), [worker])
            if batch is on_time:
                open_gaps = warehouse.execute("SELECT count() FROM open_seq_gaps")[0][0]
                assert open_gaps == 4  # seqs 0..7 missing on each cut-off node
    finally:
        worker.stop()
    assert_exact(warehouse, emitted)
    late_us = warehouse.execute("SELECT sum(allocated_us) FROM usage_adjustments FINAL")[0][0]
    held_us = sum(s["allocated_us"] for r in held for s in r["samples"])
    assert late_us == held_us  # every held-back report was late beyond 2 minutes
    assert progress(warehouse)["late_reports"] == len(held)
    assert warehouse.execute("SELECT count() FROM open_seq_gaps") == [(0,)]


def test_a_thousand_malformed_messages_are_each_rejected_and_the_worker_keeps_going(
    worker_settings, warehouse, tmp_path
):
    from collections import Counter

    from tests.malformed import malformed_messages

    cases = list(malformed_messages(1_200, seed=9))
    spec = FleetSpec(nodes=20, gpus_per_node=8, tenants=3, reports_per_node=10, seed=27)
    emitted = EmittedTotals()
    good = list(encode_all(fleet_reports(spec), emitted))
    stream = []
    for i, (key, value, _) in enumerate(cases):  # good reports interleaved with the bad
        stream.append((key, value))
        if i % 6 == 0 and good:
            stream.append(good.pop())
    stream.extend(good)
    worker = WorkerProcess.start(worker_settings, tmp_path / "worker.log")
    try:
        publisher = BackgroundPublisher(worker_settings, stream)
        publisher.start()
        drain(worker_settings, publisher.finish(), [worker])
        assert worker.alive()
    finally:
        worker.stop()
    assert_exact(warehouse, emitted)
    stored = Counter(
        dict(
            warehouse.execute("SELECT reason, count() FROM rejected_reports FINAL GROUP BY reason")
        )
    )
    assert stored == Counter(reason for *_, reason in cases)


def test_skipped_seqs_show_as_exactly_those_gaps_and_sending_them_closes_them(
    worker_settings, warehouse, tmp_path
):
    spec = FleetSpec(nodes=20, gpus_per_node=8, tenants=3, reports_per_node=20, seed=28)
    emitted = EmittedTotals()
    reports = list(fleet_reports(spec))
    skipped = {
        (spec.node_id(1), 3),
        (spec.node_id(1), 4),
        (spec.node_id(1), 5),  # one range
        (spec.node_id(2), 0),  # the very first report
        (spec.node_id(7), 10),
        (spec.node_id(7), 12),  # two ranges on one node
        (spec.node_id(19), 18),
    }
    missing = [r for r in reports if (r["node_id"], r["seq"]) in skipped]
    sent = [r for r in reports if (r["node_id"], r["seq"]) not in skipped]
    worker = WorkerProcess.start(worker_settings, tmp_path / "worker.log")
    try:
        publisher = BackgroundPublisher(worker_settings, encode_all(sent, emitted))
        publisher.start()
        drain(worker_settings, publisher.finish(), [worker])
        gaps = warehouse.execute(
            "SELECT node_id, first_missing, last_missing FROM open_seq_gaps "
            "ORDER BY node_id, first_missing"
        )
        assert gaps == [
            (spec.node_id(1), 3, 5),
            (spec.node_id(2), 0, 0),
            (spec.node_id(7), 10, 10),
            (spec.node_id(7), 12, 12),
            (spec.node_id(19), 18, 18),
        ]
        publisher = BackgroundPublisher(worker_settings, encode_all(missing, emitted))
        publisher.start()
        drain(worker_settings, publisher.finish(), [worker])
    finally:
        worker.stop()
    assert warehouse.execute("SELECT count() FROM open_seq_gaps") == [(0,)]
    assert_exact(warehouse, emitted)


def test_a_worker_retrying_an_unreachable_clickhouse_stops_within_10_s_and_loses_nothing(
    local_stack, worker_settings, warehouse, tmp_path
):
    """SIGTERM while every write is being retried against a stopped ClickHouse: the worker
    ends within 10 s, commits nothing it did not write, and a restart meters it all."""
    import signal

    from stack import process

    spec = FleetSpec(nodes=20, gpus_per_node=4, tenants=3, reports_per_node=10, seed=31)
    emitted = EmittedTotals()
    log = tmp_path / "worker.log"
    worker = WorkerProcess.start(worker_settings, log)
    try:
        time.sleep(3)
        process.stop(local_stack.read().clickhouse_pid, grace_s=30.0)
        publisher = BackgroundPublisher(
            worker_settings, encode_all(fleet_reports(spec), emitted), per_second=400
        )
        publisher.start()
        end_offsets = publisher.finish()
        deadline = time.monotonic() + 120
        while "ClickHouse unreachable" not in log.read_text():
            assert time.monotonic() < deadline, "the worker never met the outage"
            time.sleep(0.5)
        asked = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(60)
        assert time.monotonic() - asked < 10, log.read_text()[-3000:]
    finally:
        worker.stop()
        local_stack.restart_clickhouse()
    again = WorkerProcess.start(worker_settings, tmp_path / "again.log")
    try:
        drain(worker_settings, end_offsets, [again])
    finally:
        again.stop()
    assert_exact(warehouse, emitted)


def test_sigterm_mid_run_ends_a_worker_within_10_s_each_time_and_loses_nothing(
    worker_settings, warehouse, tmp_path
):
    """SIGTERM while the worker works through a backlog (fetching, processing, writing: a
    random moment), three times: each stop within 10 s, then exact totals."""
    import signal

    spec = FleetSpec(nodes=50, gpus_per_node=8, tenants=3, reports_per_node=40, seed=33)
    emitted = EmittedTotals()
    publisher = BackgroundPublisher(
        worker_settings, encode_all(fleet_reports(spec), emitted), per_second=150
    )
    rng = random.Random(7)
    publisher.start()
    stops = []
    worker = WorkerProcess.start(worker_settings, tmp_path / "worker-0.log")
    try:
        for n in range(1, 4):
            waited = time.monotonic()
            while "resuming after offset" not in worker.log_path.read_text():
                assert time.monotonic() - waited < 60, worker.log_path.read_text()[-2000:]
                time.sleep(0.2)
            time.sleep(rng.uniform(0.5, 3.0))
            asked = time.monotonic()
            worker.proc.send_signal(signal.SIGTERM)
            worker.proc.wait(60)
            stops.append(time.monotonic() - asked)
            worker = WorkerProcess.start(worker_settings, tmp_path / f"worker-{n}.log")
        drain(worker_settings, publisher.finish(), [worker])
    finally:
        worker.stop()
    assert max(stops) < 10, stops
    assert_exact(warehouse, emitted)
    assert progress(warehouse)["accepted_samples"] == spec.samples
