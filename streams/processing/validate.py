"""The contract a decoded report must meet before it is metered.

A report is the unit of identity, so it is accepted or rejected whole: one bad sample
rejects the report, with a reason naming the sample, rather than metering part of it.

A zero-length tick (``tick_end_us == tick_start_us``) holds no time: with every summed
counter at zero it is valid and meters nothing (no ledger sample, no rollup), so it never
costs the rest of its report; with any usage it is refused as ``empty_tick_with_usage``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from core import reasons
from core.errors import RejectedReport
from core.identity import (
    ReportLimits,
    is_known_sku,
    is_valid_name,
    is_valid_tenant,
)
from core.units import INT64_MAX, US_PER_SECOND
from streams.processing.aggregate import SUMMED

INT32_MAX = 2**31 - 1

_COUNTERS = ("allocated_us", "busy_us", "unhealthy_us", "energy_mj", "memory_peak_bytes")


def is_empty_tick(sample: Mapping[str, Any]) -> bool:
    """A zero-length tick: valid only without usage, and never metered."""
    return bool(sample["tick_end_us"] == sample["tick_start_us"])


def _reject(reason: str, detail: str) -> RejectedReport:
    return RejectedReport(reason, detail)


def validate_report(report: Mapping[str, Any], limits: ReportLimits, now_us: int) -> None:
    """Raise :class:`RejectedReport` unless ``report`` can be metered as it stands."""
    for name in ("node_id", "boot_id", "cluster"):
        if not is_valid_name(report[name]):
            raise _reject(reasons.INVALID_IDENTITY, f"{name}={report[name]!r}")
    if report["seq"] < 0:
        raise _reject(reasons.INVALID_IDENTITY, f"seq={report['seq']}")
    start, end = report["interval_start_us"], report["interval_end_us"]
    if start < 0:
        raise _reject(reasons.NEGATIVE_COUNTER, f"interval_start_us={start}")
    if end <= start:
        raise _reject(reasons.END_BEFORE_START, f"interval [{start}, {end})")
    if end - start > limits.max_interval_us:
        raise _reject(reasons.COUNTER_OUT_OF_RANGE, f"interval of {end - start} us")
    if end > now_us + limits.max_future_us:
        raise _reject(reasons.FUTURE_TIMESTAMP, f"interval ends {end - now_us} us after now")
    samples = report["samples"]
    if len(samples) > limits.max_samples:
        raise _reject(reasons.TOO_MANY_SAMPLES, f"{len(samples)} > {limits.max_samples}")
    seen: set[tuple[str, int]] = set()
    for index, sample in enumerate(samples):
        _validate_sample(index, sample, start, end, limits)
        if is_empty_tick(sample):
            continue  # holds no time: it cannot collide with another sample
        identity = (sample["gpu_uuid"], sample["tick_start_us"])
        if identity in seen:
            raise _reject(reasons.DUPLICATE_SAMPLE, f"sample {index}: {identity} twice")
        seen.add(identity)
    _refuse_overlapping_ticks(samples)


def _refuse_overlapping_ticks(samples: list[Mapping[str, Any]]) -> None:
    """Two ticks of one GPU in one report that share any time."""
    by_gpu = sorted(
        (s["gpu_uuid"], s["tick_start_us"], s["tick_end_us"], index)
        for index, s in enumerate(samples)
        if not is_empty_tick(s)
    )
    for (gpu, start, end, i), (next_gpu, next_start, next_end, j) in itertools.pairwise(by_gpu):
        if gpu == next_gpu and next_start < end:
            first, second = sorted((i, j))
            raise _reject(
                reasons.OVERLAPPING_TIME,
                f"samples {first} and {second}: GPU {gpu} ticks [{start}, {end}) and "
                f"[{next_start}, {next_end}) overlap",
            )


def _validate_sample(
    index: int, sample: Mapping[str, Any], start: int, end: int, limits: ReportLimits
) -> None:
    where = f"sample {index}"
    if not is_valid_name(sample["gpu_uuid"]) or not 0 <= sample["gpu_index"] <= INT32_MAX:
        raise _reject(reasons.INVALID_IDENTITY, f"{where}: gpu {sample['gpu_uuid']!r}")
    if not is_valid_tenant(sample["tenant_id"], limits):
        raise _reject(reasons.INVALID_TENANT, f"{where}: tenant_id={sample['tenant_id']!r}")
    if not is_known_sku(sample["sku"], limits):
        raise _reject(reasons.UNKNOWN_SKU, f"{where}: sku={sample['sku']!r}")
    if len(sample["job_id"]) > 256:
        raise _reject(reasons.INVALID_IDENTITY, f"{where}: job_id longer than 256")
    tick_start, tick_end = sample["tick_start_us"], sample["tick_end_us"]
    if tick_end < tick_start:
        raise _reject(reasons.END_BEFORE_START, f"{where}: tick [{tick_start}, {tick_end})")
    if tick_end == tick_start and any(sample[name] for name in SUMMED):
        used = ", ".join(f"{name}={sample[name]}" for name in SUMMED if sample[name])
        raise _reject(
            reasons.EMPTY_TICK_WITH_USAGE, f"{where}: zero-length tick at {tick_start} has {used}"
        )
    if tick_start < start or tick_end > end:
        raise _reject(
            reasons.TICK_OUTSIDE_INTERVAL,
            f"{where}: tick [{tick_start}, {tick_end}) outside [{start}, {end})",
        )
    for name in _COUNTERS:
        if sample[name] < 0:
            raise _reject(reasons.NEGATIVE_COUNTER, f"{where}: {name}={sample[name]}")
    tick_us = tick_end - tick_start
    allocated = sample["allocated_us"]
    if allocated > tick_us:
        raise _reject(
            reasons.COUNTER_EXCEEDS_TICK, f"{where}: allocated_us {allocated} > {tick_us}"
        )
    for name in ("busy_us", "unhealthy_us"):
        if sample[name] > allocated:
            raise _reject(
                reasons.COUNTER_EXCEEDS_TICK, f"{where}: {name} {sample[name]} > allocated_us"
            )
    max_energy_mj = limits.max_power_mw * tick_us // US_PER_SECOND
    if sample["energy_mj"] > min(max_energy_mj, INT64_MAX):
        raise _reject(
            reasons.COUNTER_OUT_OF_RANGE,
            f"{where}: energy_mj {sample['energy_mj']} above {limits.max_power_mw} mW",
        )
    if sample["memory_peak_bytes"] > limits.max_memory_bytes:
        raise _reject(
            reasons.COUNTER_OUT_OF_RANGE,
            f"{where}: memory_peak_bytes {sample['memory_peak_bytes']}",
        )
