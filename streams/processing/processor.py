"""One input partition's processing: decode → validate → dedupe → aggregate.

Parameters (:class:`~streams.contract.ProcessorSettings`), logic
(:class:`PartitionProcessor`) and state (:class:`~streams.processing.state.PartitionState`) are
separate objects. No Kafka, no ClickHouse: a batch of ``SourceMessage`` in, a
``BatchOutcome`` out (the carrier types are in ``streams/contract.py``).

The outcome is a function of the partition's message sequence alone, never of where the
batches were cut or of the wall clock: windows close per message, and "the future" is
judged against the record's log timestamp. That is what makes a replay after a crash
write exactly the rows the first attempt wrote (see ``streams/EXACTLY_ONCE.md``).

Windows are event-time, 1 minute by default. A window closes once the partition's event
time (the latest report end accepted) has passed its end by the lateness bound. A sample
piece that belongs to a closed window is metered as an *adjustment* for that window,
keyed by its source offset; it never rewrites the closed window's stored partial.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core import reasons
from core.errors import RejectedReport
from schemas import ReportCodec
from streams.contract import (
    AdjustmentRow,
    BatchOutcome,
    ProcessorSettings,
    SourceMessage,
)
from streams.output.native import LEDGER_COLUMNS, LEDGER_TYPES, encode_block, holding_rows
from streams.processing.aggregate import RollupKey, add_into, sample_pieces
from streams.processing.grains import OnTime
from streams.processing.nodeprogress import progress_rows
from streams.processing.outcome import (
    count_outcome,
    finish_rollups,
    forget_metered_time,
    observe_seq,
    reject,
    rejection_from,
)
from streams.processing.seqtrack import SeqVerdict
from streams.processing.state import PartitionState
from streams.processing.validate import is_empty_tick, validate_report


class PartitionProcessor:
    def __init__(
        self,
        state: PartitionState,
        settings: ProcessorSettings,
        codec: ReportCodec | None = None,
    ) -> None:
        self.state = state
        self.settings = settings
        self.codec = codec or ReportCodec()

    def process(self, messages: Iterable[SourceMessage]) -> BatchOutcome:
        state = self.state
        outcome = BatchOutcome(state.topic, state.partition)
        ledger_rows: list[tuple[object, ...]] = []
        on_time = OnTime(state.windows, state.coarse)
        seen_us = 0
        for message in messages:
            if message.offset <= state.applied_offset:
                outcome.skipped_replays += 1
                continue
            self._one(message, outcome, on_time, ledger_rows)
            state.applied_offset = message.offset
            seen_us = max(seen_us, message.timestamp_us)
        outcome.applied_offset = state.applied_offset
        forget_metered_time(state, self.settings)
        finish_rollups(outcome, state.partition, on_time, state.applied_offset)
        outcome.ledger = encode_block(LEDGER_COLUMNS, LEDGER_TYPES, ledger_rows)
        outcome.ledger_rows = len(ledger_rows)
        outcome.ledger_samples = sum(len(row[-1]) for row in ledger_rows)  # type: ignore[arg-type]
        count_outcome(state, outcome)
        outcome.node_rows = progress_rows(state, seen_us)
        return outcome

    def _one(
        self,
        message: SourceMessage,
        outcome: BatchOutcome,
        on_time: OnTime,
        ledger_rows: list[tuple[object, ...]],
    ) -> None:
        report: dict[str, Any] | None = None
        try:
            report = self.codec.decode(message.value)
            validate_report(report, self.settings.limits, message.timestamp_us)
        except RejectedReport as rejected:
            refused = reject(self.state, message, rejected, report, outcome)
            if refused is not None:
                outcome.rejections.append(refused)
            return
        if self._observe_seq(report, message, outcome) is SeqVerdict.DUPLICATE:
            outcome.duplicate_reports += 1
            return
        state = self.state
        horizon_us = state.max_event_us - self.settings.time_memory_us
        overlap = state.gpu_time.overlap(report["samples"], horizon_us)
        if overlap is not None:
            rejected = RejectedReport(reasons.OVERLAPPING_TIME, overlap.detail())
            outcome.rejections.append(rejection_from(message, rejected, report))
            return
        state.gpu_time.record(report["samples"], horizon_us)
        self._meter(report, message, outcome, on_time, ledger_rows)

    def _observe_seq(
        self, report: dict[str, Any], message: SourceMessage, outcome: BatchOutcome
    ) -> SeqVerdict:
        return observe_seq(
            self.state, report["node_id"], report["boot_id"], report["seq"], message, outcome
        )

    def _meter(
        self,
        report: dict[str, Any],
        message: SourceMessage,
        outcome: BatchOutcome,
        on_time: OnTime,
        ledger_rows: list[tuple[object, ...]],
    ) -> None:
        state, width = self.state, self.settings.window_us
        cluster, node, boot, seq = (
            report["cluster"],
            report["node_id"],
            report["boot_id"],
            report["seq"],
        )
        late: dict[RollupKey, list[int]] = {}
        late_flags: list[int] = []
        samples = [s for s in report["samples"] if not is_empty_tick(s)]
        for s in samples:
            is_late = False
            for key, parts in sample_pieces(cluster, s, width):
                if key.window_start_us < state.closed_before_us:
                    add_into(late, key, parts)
                    is_late = True
                else:
                    on_time.add(key, parts)
            late_flags.append(int(is_late))
        if self.settings.emit_ledger and samples:
            fields = (
                node,
                boot,
                seq,
                cluster,
                report["interval_start_us"],
                report["interval_end_us"],
                state.partition,
                message.offset,
            )
            ledger_rows.extend(holding_rows(fields, samples, late_flags))
        if late:
            outcome.late_reports += 1
            open_after = state.closed_before_us if state.folds_late(message.offset) else None
            for key, sums in sorted(late.items()):
                outcome.adjustments.append(
                    AdjustmentRow(key, state.partition, message.offset, tuple(sums))
                )
                on_time.add_late(key, sums, message.offset, open_after)
        outcome.accepted_reports += 1
        outcome.accepted_samples += len(samples)
        if state.advance_event_time(
            report["interval_end_us"], self.settings.lateness_us, self.settings.window_us
        ):
            state.evict_closed()
