"""Folding accepted samples into per-(tenant, sku, cluster, window) integer sums.

This is the plain reference implementation; a vectorized hot path must produce exactly
the same sums (see the parity tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from core.units import USAGE_COUNTERS
from core.windows import split_counters

SUMMED = USAGE_COUNTERS
# Column order of a sums list: the SUMMED counters, then the sample count.
SAMPLE_COUNT = len(SUMMED)


class RollupKey(NamedTuple):
    tenant_id: str
    sku: str
    cluster: str
    window_start_us: int


def sample_pieces(
    cluster: str, sample: Mapping[str, Any], width_us: int
) -> list[tuple[RollupKey, list[int]]]:
    """What one sample adds to each window it touches: SUMMED parts, then its count.

    The sample is counted once, in the window holding its tick start (the first piece).
    """
    tenant, sku = sample["tenant_id"], sample["sku"]
    values = [sample[name] for name in SUMMED]
    pieces = [
        (RollupKey(tenant, sku, cluster, w), [*parts, 0])
        for w, parts in split_counters(
            values, sample["tick_start_us"], sample["tick_end_us"], width_us
        )
    ]
    pieces[0][1][SAMPLE_COUNT] = 1
    return pieces


def add_into(sums_by_key: dict[RollupKey, list[int]], key: RollupKey, parts: list[int]) -> None:
    sums = sums_by_key.get(key)
    if sums is None:
        sums_by_key[key] = list(parts)
    else:
        for i, part in enumerate(parts):
            sums[i] += part


def aggregate_reports(
    reports: Iterable[Mapping[str, Any]], width_us: int
) -> dict[RollupKey, list[int]]:
    """Sums of every sample of ``reports`` (already validated) by rollup key."""
    sums_by_key: dict[RollupKey, list[int]] = {}
    for report in reports:
        for sample in report["samples"]:
            for key, parts in sample_pieces(report["cluster"], sample, width_us):
                add_into(sums_by_key, key, parts)
    return sums_by_key
