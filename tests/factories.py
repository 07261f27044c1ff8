"""Small builders for reports and messages used across the tests."""

from __future__ import annotations

import copy
import random
from typing import Any

from agent.fleet import DEFAULT_START_US
from core.units import US_PER_DAY, US_PER_MINUTE, US_PER_SECOND
from schemas import ReportCodec
from streams.contract import SourceMessage
from warehouse.totals import GRAINS

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


# A UTC midnight inside the fleet's simulated day: usage around it crosses an hour and a day.
MIDNIGHT = (DEFAULT_START_US // US_PER_DAY + 1) * US_PER_DAY
MONTH_MIDNIGHT = 1_796_083_200 * US_PER_SECOND  # 2026-12-01 00:00 UTC: a month ends there


def midnight_fleet(seed: int, reports: int = 160, midnight: int = MIDNIGHT) -> list[bytes]:
    """Encoded reports from 10 minutes before to 10 minutes after ``midnight``, out of
    order, with duplicate seqs, late ones, two tenants and samples straddling windows."""
    rng = random.Random(seed)
    codec = ReportCodec()
    out = []
    for i in range(reports):
        start = midnight - 10 * US_PER_MINUTE + rng.randrange(0, 120) * TICK_US
        tenant = rng.choice(["aurora-labs", "borealis-ai"])
        sample = make_sample(start, energy_mj=i, tenant_id=tenant)
        if rng.random() < 0.1:  # straddles a window (and sometimes the hour and the day)
            sample["tick_start_us"] -= 5 * US_PER_SECOND
        out.append(codec.encode(make_report([sample], seq=rng.randrange(0, 120))))
    return out


# What grain_differences returns when every grain holds exactly the expected usage.
EXACT_AT_EVERY_GRAIN = {grain: [] for grain in GRAINS}
