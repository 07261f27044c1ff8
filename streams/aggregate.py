"""Folding accepted samples into per-(tenant, sku, cluster, window) integer sums.

This is the plain reference implementation; a vectorized hot path must produce exactly
the same sums (see the parity tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from meter.windows import split_counters, window_start

SUMMED = ("allocated_us", "busy_us", "unhealthy_us", "energy_mj")
# Column order of a sums list: the SUMMED counters, then the sample count.
SAMPLE_COUNT = len(SUMMED)


class RollupKey(NamedTuple):
    tenant_id: str
    sku: str
    cluster: str
    window_start_us: int


def empty_sums() -> list[int]:
    return [0] * (len(SUMMED) + 1)


def add_sample(
    sums_by_key: dict[RollupKey, list[int]],
    cluster: str,
    sample: Mapping[str, Any],
    width_us: int,
) -> list[RollupKey]:
    """Add one sample; returns the keys whose sums it changed."""
    start, end = sample["tick_start_us"], sample["tick_end_us"]
    tenant, sku = sample["tenant_id"], sample["sku"]
    values = [sample[name] for name in SUMMED]
    touched = []
    for w, parts in split_counters(values, start, end, width_us):
        key = RollupKey(tenant, sku, cluster, w)
        sums = sums_by_key.setdefault(key, empty_sums())
        for i, part in enumerate(parts):
            sums[i] += part
        touched.append(key)
    # touched[0] is the window holding the tick start, where the sample is counted.
    sums_by_key[touched[0]][SAMPLE_COUNT] += 1
    return touched


def aggregate_reports(
    reports: Iterable[Mapping[str, Any]], width_us: int
) -> dict[RollupKey, list[int]]:
    """Sums of every sample of ``reports`` (already validated) by rollup key."""
    sums_by_key: dict[RollupKey, list[int]] = {}
    for report in reports:
        for sample in report["samples"]:
            add_sample(sums_by_key, report["cluster"], sample, width_us)
    return sums_by_key


def earliest_window(report: Mapping[str, Any], width_us: int) -> int:
    return window_start(min(s["tick_start_us"] for s in report["samples"]), width_us)
