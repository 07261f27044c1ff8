"""Small builders for reports and messages used across the tests."""

from __future__ import annotations

import copy
from typing import Any

from agent.fleet import DEFAULT_START_US
from meter.units import US_PER_SECOND
from streams.processor import SourceMessage

TICK_US = 10 * US_PER_SECOND
# A clock a little after the fleet's simulated time, so nothing is "far future".
NOW_US = DEFAULT_START_US + 86_400 * US_PER_SECOND


def make_sample(tick_start_us: int = DEFAULT_START_US, **overrides: Any) -> dict[str, Any]:
    sample = {
        "gpu_uuid": "GPU-aaaaaaaa-0000-4000-8000-000000000000",
        "gpu_index": 0,
        "sku": "H100",
        "tenant_id": "aurora-labs",
        "job_id": "job-1",
        "tick_start_us": tick_start_us,
        "tick_end_us": tick_start_us + TICK_US,
        "allocated_us": TICK_US,
        "busy_us": TICK_US // 2,
        "unhealthy_us": 0,
        "energy_mj": 4_000_000,
        "memory_peak_bytes": 2**30,
    }
    sample.update(overrides)
    return sample


def make_report(
    samples: list[dict[str, Any]] | None = None, seq: int = 0, **overrides: Any
) -> dict[str, Any]:
    samples = [make_sample()] if samples is None else samples
    starts = [s["tick_start_us"] for s in samples] or [DEFAULT_START_US]
    ends = [s["tick_end_us"] for s in samples] or [DEFAULT_START_US + TICK_US]
    report = {
        "node_id": "sc1-node-00001",
        "boot_id": "11111111-2222-4333-8444-555555555555",
        "seq": seq,
        "cluster": "sc1",
        "interval_start_us": min(starts),
        "interval_end_us": max(ends),
        "samples": copy.deepcopy(samples),
    }
    report.update(overrides)
    return report


def messages(
    values: list[bytes], partition: int = 0, first_offset: int = 0, timestamp_us: int = NOW_US
) -> list[SourceMessage]:
    return [
        SourceMessage("usage", partition, first_offset + i, b"node", value, timestamp_us)
        for i, value in enumerate(values)
    ]
