"""What both processors do the same way with a batch: the seq rule for refused reports,
the rejection records, the rollup rows at every grain, the partition's counters.

The readable twin (``streams/processing/processor.py``) and the compiled hot path
(``streams/processing/hotpath/processor.py``) decide the same things; what they decide alike is
written once, here.
"""

from __future__ import annotations

from typing import Any

from core import reasons
from core.errors import RejectedReport
from streams.contract import (
    AdjustmentRow,
    BatchOutcome,
    ProcessorSettings,
    Rejection,
    RollupRow,
    SourceMessage,
)
from streams.processing.grains import COARSE_GRAINS, OnTime
from streams.processing.seqtrack import SeqVerdict
from streams.processing.state import PartitionState


def reject(
    state: PartitionState,
    message: SourceMessage,
    rejected: RejectedReport,
    report: dict[str, Any] | None,
    outcome: BatchOutcome,
) -> Rejection | None:
    """A refused report, accounted for: unless its identity is unreadable, its seq counts
    (it is not missing data), so a copy of one already counted is a duplicate, not a
    second rejection. The rejection to record, or None for such a duplicate."""
    if report is not None and rejected.reason != reasons.INVALID_IDENTITY:
        verdict = observe_seq(
            state, report["node_id"], report["boot_id"], report["seq"], message, outcome
        )
        if verdict is SeqVerdict.DUPLICATE:
            outcome.duplicate_reports += 1
            return None
    return rejection_from(message, rejected, report)


def observe_seq(
    state: PartitionState,
    node_id: str,
    boot_id: str,
    seq: int,
    message: SourceMessage,
    outcome: BatchOutcome,
) -> SeqVerdict:
    """Record a report's seq for its (node, boot); gap rows go into ``outcome``."""
    verdict, rows = state.observe_seq(node_id, boot_id, seq, message.timestamp_us, message.offset)
    outcome.gap_rows.extend(rows)
    return verdict


def rejection_from(
    message: SourceMessage, rejected: RejectedReport, report: dict[str, Any] | None
) -> Rejection:
    if report is None:
        return Rejection(message, rejected.reason, rejected.detail)
    return Rejection(
        message,
        rejected.reason,
        rejected.detail,
        node_id=str(report.get("node_id", "")),
        boot_id=str(report.get("boot_id", "")),
        seq=int(report.get("seq", -1)),
    )


def finish_rollups(outcome: BatchOutcome, partition: int, on_time: OnTime, version: int) -> None:
    """The batch's rollup rows at every grain, and its coarse adjustments, from what
    ``on_time`` gathered. A window closed during the batch is gone from the state, but its
    last sums are still in ``on_time``: they are its final row."""
    outcome.rollups = [
        RollupRow(key, partition, tuple(on_time.minutes[key]), version)
        for key in sorted(on_time.minutes)
    ]
    for grain in COARSE_GRAINS:
        touched = on_time.touched[grain.name]
        outcome.coarse_rollups[grain.name] = [
            RollupRow(key, partition, tuple(touched[key]), version) for key in sorted(touched)
        ]
        late = on_time.late[grain.name]
        outcome.coarse_adjustments[grain.name] = [
            AdjustmentRow(key, partition, offset, tuple(late[(key, offset)]))
            for key, offset in sorted(late)
        ]


def forget_metered_time(state: PartitionState, settings: ProcessorSettings) -> None:
    """At the end of a batch: what the overlap check will never look at again."""
    state.gpu_time.forget_before(state.max_event_us - settings.time_memory_us)


def count_outcome(state: PartitionState, outcome: BatchOutcome) -> None:
    """Add a batch's outcome to the partition's persistent counters."""
    counters = state.counters
    counters["accepted_reports"] += outcome.accepted_reports
    counters["accepted_samples"] += outcome.accepted_samples
    counters["duplicate_reports"] += outcome.duplicate_reports
    counters["late_reports"] += outcome.late_reports
    counters["rejected_reports"] += len(outcome.rejections)
