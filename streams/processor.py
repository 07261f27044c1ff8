"""One input partition's processing: decode → validate → aggregate into open windows.

Parameters (:class:`ProcessorSettings`), logic (:class:`PartitionProcessor`) and state
(:class:`PartitionState`, a plain snapshot-able dataclass) are separate objects, so the
state can later be stored and restored without touching the logic. No Kafka, no
ClickHouse: a batch of :class:`SourceMessage` in, a :class:`BatchOutcome` out.

Windows are event-time, 1 minute by default. A window stays open until the partition's
event time (the latest report end seen) has passed its end by the lateness bound; then it
is dropped from memory (its last cumulative row is already written). A report that would
touch a closed window is rejected as ``late_beyond_bound``, never folded into a stored
partial and never dropped silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from meter import reasons
from meter.errors import ConfigError, RejectedReport
from meter.units import US_PER_MINUTE
from schemas import ReportCodec
from streams.aggregate import RollupKey, add_sample, earliest_window
from streams.validate import ReportLimits, validate_report


def wall_clock_us() -> int:
    return time.time_ns() // 1_000


@dataclass(frozen=True)
class SourceMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Rejection:
    message: SourceMessage
    reason: str
    detail: str
    node_id: str = ""
    boot_id: str = ""
    seq: int = -1


@dataclass(frozen=True)
class RollupRow:
    """The cumulative sums of one window's key as seen from one partition."""

    key: RollupKey
    partition: int
    sums: tuple[int, ...]
    version: int  # the input offset these sums include everything up to


@dataclass(frozen=True)
class ProcessorSettings:
    window_us: int = US_PER_MINUTE
    lateness_us: int = 10 * US_PER_MINUTE
    limits: ReportLimits = field(default_factory=ReportLimits)

    def __post_init__(self) -> None:
        if self.window_us <= 0 or US_PER_MINUTE * 60 % self.window_us:
            raise ConfigError(f"window of {self.window_us} us must divide an hour")
        if self.lateness_us < 0:
            raise ConfigError("lateness bound must not be negative")


@dataclass
class PartitionState:
    partition: int
    windows: dict[RollupKey, list[int]] = field(default_factory=dict)
    applied_offset: int = -1
    max_event_us: int = 0
    closed_before_us: int = 0


@dataclass
class BatchOutcome:
    partition: int
    rollups: list[RollupRow] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    accepted_reports: int = 0
    accepted_samples: int = 0
    skipped_replays: int = 0
    closed_windows: int = 0


class PartitionProcessor:
    def __init__(
        self,
        state: PartitionState,
        settings: ProcessorSettings,
        codec: ReportCodec | None = None,
        clock_us: Callable[[], int] = wall_clock_us,
    ) -> None:
        self.state = state
        self.settings = settings
        self.codec = codec or ReportCodec()
        self._clock_us = clock_us

    def process(self, messages: Iterable[SourceMessage]) -> BatchOutcome:
        state, settings = self.state, self.settings
        outcome = BatchOutcome(state.partition)
        touched: set[RollupKey] = set()
        now_us = self._clock_us()
        last_offset = state.applied_offset
        for message in messages:
            if message.offset <= state.applied_offset:
                outcome.skipped_replays += 1
                continue
            last_offset = max(last_offset, message.offset)
            report: dict[str, Any] | None = None
            try:
                report = self.codec.decode(message.value)
                validate_report(report, settings.limits, now_us)
                if report["samples"]:
                    first = earliest_window(report, settings.window_us)
                    if first < state.closed_before_us:
                        raise RejectedReport(
                            reasons.LATE_BEYOND_BOUND,
                            f"window {first} us closed (partition closed before "
                            f"{state.closed_before_us} us)",
                        )
            except RejectedReport as rejected:
                outcome.rejections.append(_rejection(message, rejected, report))
                continue
            for sample in report["samples"]:
                touched.update(
                    add_sample(state.windows, report["cluster"], sample, settings.window_us)
                )
            state.max_event_us = max(state.max_event_us, report["interval_end_us"])
            outcome.accepted_reports += 1
            outcome.accepted_samples += len(report["samples"])
        state.applied_offset = last_offset
        outcome.rollups = [
            RollupRow(key, state.partition, tuple(state.windows[key]), last_offset)
            for key in sorted(touched)
        ]
        outcome.closed_windows = self._close_windows()
        return outcome

    def _close_windows(self) -> int:
        state, width = self.state, self.settings.window_us
        horizon = state.max_event_us - self.settings.lateness_us
        closed_before = horizon - horizon % width
        if closed_before <= state.closed_before_us:
            return 0
        state.closed_before_us = closed_before
        stale = [key for key in state.windows if key.window_start_us < closed_before]
        for key in stale:
            del state.windows[key]
        return len(stale)


def _rejection(
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
