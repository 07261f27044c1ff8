"""Prometheus text exposition of a worker's view of its partitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionView:
    partition: int
    counters: Mapping[str, int]
    open_gaps: int
    applied_offset: int
    committed_offset: int | None
    highwater: int | None


_COUNTERS = (
    ("accepted_reports", "meter_reports_accepted_total", "Reports metered."),
    ("accepted_samples", "meter_samples_accepted_total", "GPU samples metered."),
    ("duplicate_reports", "meter_reports_duplicate_total", "Reports dropped as duplicates."),
    ("late_reports", "meter_reports_late_total", "Reports metered as adjustments."),
    ("rejected_reports", "meter_reports_rejected_total", "Reports rejected with a reason."),
)


def render(
    topic: str,
    views: Iterable[PartitionView],
    rejected_by_reason: Mapping[str, int],
    batches: int,
    stage_seconds: Mapping[str, float],
    batches_to_twin: int = 0,
) -> str:
    views = sorted(views, key=lambda v: v.partition)
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    def sample(name: str, labels: Mapping[str, object], value: float) -> None:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        out.append(f"{name}{{{text}}} {value}")

    for key, name, help_text in _COUNTERS:
        family(name, "counter", help_text + " Per source partition, since it was first processed.")
        for v in views:
            sample(name, {"topic": topic, "partition": v.partition}, v.counters.get(key, 0))
    family("meter_seq_gaps_open", "gauge", "Open gaps in node report seqs (possible data loss).")
    for v in views:
        sample("meter_seq_gaps_open", {"topic": topic, "partition": v.partition}, v.open_gaps)
    family("meter_partition_applied_offset", "gauge", "Last offset written to the warehouse.")
    for v in views:
        sample(
            "meter_partition_applied_offset",
            {"topic": topic, "partition": v.partition},
            v.applied_offset,
        )
    family("meter_partition_lag", "gauge", "Fetch high watermark minus committed offset.")
    for v in views:
        if v.highwater is not None:
            committed = v.committed_offset if v.committed_offset is not None else 0
            lag = max(v.highwater - committed, 0)
            sample("meter_partition_lag", {"topic": topic, "partition": v.partition}, lag)
    family("meter_rejected_by_reason_total", "counter", "Rejections by reason since start.")
    for reason, count in sorted(rejected_by_reason.items()):
        sample("meter_rejected_by_reason_total", {"topic": topic, "reason": reason}, count)
    family("meter_batches_total", "counter", "Batches processed since start.")
    out.append(f"meter_batches_total {batches}")
    family(
        "meter_batches_to_twin_total",
        "counter",
        "Partition batches the hot path handed to its readable twin since start (another "
        "schema version, values past its integer bounds); valid input gives none.",
    )
    out.append(f"meter_batches_to_twin_total {batches_to_twin}")
    family(
        "meter_batch_stage_seconds_total",
        "counter",
        "Seconds the worker spent per batch stage: fetch, prepare, wait_for_write (its main "
        "loop) and write (in the background, overlapping the next batch).",
    )
    for stage, seconds in sorted(stage_seconds.items()):
        sample("meter_batch_stage_seconds_total", {"stage": stage}, round(seconds, 3))
    return "\n".join(out) + "\n"
