"""Messages at and beyond every size limit in the chain, through the real broker, worker and
ClickHouse: a poison message of any size never stops metering.

The limits: the agent's producer (2 MiB), the broker (the local one has none; Kafka's
topic ``max.message.bytes``, which ``ensure_topics`` sets to the pipeline's limit), the
worker's fetch (16 MiB a partition; a larger record still comes back whole) and the
dead-letter producer (the same limit, plus room for headers). A rejected message too large
to dead-letter whole is dead-lettered as a stub (headers, the first bytes) and kept whole
in ``rejected_reports``.
"""

from __future__ import annotations

import hashlib

import pytest

from agent.fleet import DEFAULT_START_US, FleetSpec, fleet_reports
from agent.publisher import ReportPublisher
from agent.totals import EmittedTotals
from core import reasons
from core.units import US_PER_SECOND
from meter.runner import WorkerProcess
from schemas import ReportCodec
from streams.host.settings import MAX_MESSAGE_BYTES
from streams.output.dlq import parse_headers
from tests.e2e.harness import drain
from tests.e2e.test_pipeline import _read_topic
from tests.factories import EXACT_AT_EVERY_GRAIN
from warehouse.totals import differences, grain_differences, ledger_totals

pytestmark = pytest.mark.e2e
MB = 1 << 20
GPUS = 64
JOB_ID_CHARS = 256
# Just past each power of two (aiokafka's 1 MB default, the agent's 2 MiB), just under the
# pipeline's 16 MiB, and past it.
SIZES = (MB + MB // 8, 2 * MB + MB // 8, 4 * MB + MB // 8, 8 * MB + MB // 8, 16 * MB - MB // 16)
BEYOND = 20 * MB


def _big_report(node: int, target_bytes: int, tenant: str = "aurora-labs") -> dict:
    """A report of about ``target_bytes`` (long job ids, 64 GPUs, 1-s ticks)."""
    codec = ReportCodec()
    probe = _report(node, 1, tenant)
    per_tick = (len(codec.encode(probe)) - 60) or 1
    ticks = max(1, target_bytes // per_tick)
    return _report(node, ticks, tenant)


def _report(node: int, ticks: int, tenant: str) -> dict:
    start = DEFAULT_START_US + 3_600 * US_PER_SECOND
    samples = [
        {
            "gpu_uuid": f"GPU-{node:08d}-{g:04d}-4000-8000-000000000000",
            "gpu_index": g,
            "sku": "H100",
            "tenant_id": tenant,
            "job_id": f"job-{node}-{g}-".ljust(JOB_ID_CHARS, "x"),
            "tick_start_us": start + t * US_PER_SECOND,
            "tick_end_us": start + (t + 1) * US_PER_SECOND,
            "allocated_us": US_PER_SECOND,
            "busy_us": US_PER_SECOND // 3,
            "unhealthy_us": 0,
            "energy_mj": 500_000,
            "memory_peak_bytes": 2**30,
        }
        for t in range(ticks)
        for g in range(GPUS)
    ]
    return {
        "node_id": f"sc1-big-{node:04d}",
        "boot_id": "22222222-3333-4444-8555-666666666666",
        "seq": 0,
        "cluster": "sc1",
        "interval_start_us": start,
        "interval_end_us": start + ticks * US_PER_SECOND,
        "samples": samples,
    }


def test_messages_of_every_size_are_metered_or_accounted_for_and_metering_goes_on(
    worker_settings, warehouse, tmp_path
):
    codec = ReportCodec()
    emitted = EmittedTotals()
    small = list(fleet_reports(FleetSpec(nodes=8, gpus_per_node=4, reports_per_node=6, seed=5)))
    big_valid = [_big_report(i, size) for i, size in enumerate(SIZES)]
    big_invalid = {  # value -> reason
        codec.encode(_big_report(100 + i, size, tenant="Not A Tenant")): reasons.INVALID_TENANT
        for i, size in enumerate((*SIZES, BEYOND))
    }
    over_count = _report(200, 1, "aurora-labs")
    over_count["samples"] = [
        {**over_count["samples"][0], "gpu_uuid": f"GPU-{i:012d}"} for i in range(65_537)
    ]
    big_invalid[codec.encode(over_count)] = reasons.TOO_MANY_SAMPLES
    assert max(map(len, big_invalid)) > MAX_MESSAGE_BYTES  # one beyond every limit

    bigs = [(b["node_id"].encode(), codec.encode(b)) for b in big_valid]
    bigs += [(b"sc1-big-bad", value) for value in big_invalid]
    emitted.add_reports(big_valid)
    frames: list[tuple[bytes, bytes]] = []
    for i, report in enumerate(small):  # every size among ordinary reports
        emitted.add_report(report)
        frames.append((report["node_id"].encode(), codec.encode(report)))
        if i % 3 == 0 and bigs:
            frames.append(bigs.pop())
    frames.extend(bigs)

    # A producer without the agent's 2 MiB cap: the broker and the worker are what is tested.
    with ReportPublisher(
        worker_settings.bootstrap, worker_settings.topic, max_request_size=64 * MB
    ) as publisher:
        for key, value in frames:
            publisher.publish(key, value)
        publisher.flush(timeout_s=120)
        end_offsets = dict(publisher.end_offsets)

    worker = WorkerProcess.start(worker_settings, tmp_path / "worker.log")
    try:
        drain(worker_settings, end_offsets, [worker], timeout_s=300)
        assert worker.alive(), worker.log_path.read_text()[-3000:]
    finally:
        worker.stop()

    assert grain_differences(warehouse, emitted.by_key) == EXACT_AT_EVERY_GRAIN
    assert differences(emitted.by_key, ledger_totals(warehouse)) == []
    rows = warehouse.execute(
        "SELECT reason, payload_size, payload_sha256, length(payload) FROM rejected_reports FINAL"
    )
    assert sorted((r, size) for r, size, _, _ in rows) == sorted(
        (reason, len(v)) for v, reason in big_invalid.items()
    )
    by_sha = {hashlib.sha256(v).hexdigest(): v for v in big_invalid}
    assert all(sha in by_sha and kept == size for _, size, sha, kept in rows)

    dead = _read_topic(worker_settings.bootstrap, worker_settings.dlq_topic, len(big_invalid))
    assert len(dead) == len(big_invalid)
    for record in dead:
        headers = parse_headers(record.headers)
        original = by_sha[headers["payload_sha256"]]
        assert headers["reason"] == big_invalid[original]
        assert int(headers["payload_size"]) == len(original)
        if len(original) <= MAX_MESSAGE_BYTES:
            assert headers["payload"] == "whole" and record.value == original
        else:
            assert headers["payload"] == "truncated"
            assert original.startswith(record.value) and len(record.value) < len(original)
