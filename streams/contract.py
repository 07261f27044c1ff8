"""What the stages hand each other: the carrier types of a batch's path.

Kafka input hands the processing stage :class:`SourceMessage` records of one partition;
processing (the hot path, or its readable twin) hands the output stage one
:class:`BatchOutcome` per batch: rollup rows at every grain, adjustments, gaps, node
progress, rejections and the ledger block; :class:`ProcessorSettings` are the parameters
both processors take. Modules of every stage import these from here, not from a
processor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import ConfigError
from core.identity import ReportLimits
from core.units import US_PER_MINUTE
from streams.processing.aggregate import RollupKey
from streams.processing.gputime import DEFAULT_TIME_MEMORY_US
from streams.processing.nodeprogress import NodeProgressRow
from streams.processing.seqtrack import GapRow


@dataclass(frozen=True)
class SourceMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_us: int  # the record's log timestamp


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
class AdjustmentRow:
    """Usage of one late report for one already-closed window."""

    key: RollupKey
    partition: int
    offset: int
    sums: tuple[int, ...]


@dataclass(frozen=True)
class ProcessorSettings:
    window_us: int = US_PER_MINUTE
    lateness_us: int = 10 * US_PER_MINUTE
    limits: ReportLimits = field(default_factory=ReportLimits)
    emit_ledger: bool = True  # False: sums, seqs and rejects only (benchmarks, replays)
    # How far behind the partition's event time each GPU's metered time is remembered, to
    # refuse overlapping time (streams/processing/gputime.py).
    time_memory_us: int = DEFAULT_TIME_MEMORY_US

    def __post_init__(self) -> None:
        if self.window_us <= 0 or US_PER_MINUTE * 60 % self.window_us:
            raise ConfigError(f"window of {self.window_us} us must divide an hour")
        if self.lateness_us < 0:
            raise ConfigError("lateness bound must not be negative")
        if self.time_memory_us < self.lateness_us:
            raise ConfigError("the time memory must be at least the lateness bound")


@dataclass
class BatchOutcome:
    topic: str
    partition: int
    applied_offset: int = -1
    # one Native block of LEDGER_COLUMNS (streams/output/native.py)
    ledger: bytes | memoryview = b""
    ledger_rows: int = 0  # rows of the block: one per accepted report and GPU holding
    ledger_samples: int = 0
    rollups: list[RollupRow] = field(default_factory=list)
    adjustments: list[AdjustmentRow] = field(default_factory=list)
    # The same usage at the coarse grains (streams/processing/grains.py), by grain name.
    coarse_rollups: dict[str, list[RollupRow]] = field(default_factory=dict)
    coarse_adjustments: dict[str, list[AdjustmentRow]] = field(default_factory=dict)
    gap_rows: list[GapRow] = field(default_factory=list)
    # streams/processing/nodeprogress.py
    node_rows: list[NodeProgressRow] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    accepted_reports: int = 0
    accepted_samples: int = 0
    duplicate_reports: int = 0
    late_reports: int = 0
    skipped_replays: int = 0
