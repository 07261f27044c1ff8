"""Writing a batch's outcomes to ClickHouse, every table idempotent, the states last.

The ledger (two HTTP requests at once) is written while the rejected reports, rollup
partials, adjustments, seq gaps and node progress go over the driver's connection; the
partition states go only after all of them have succeeded, and a failure is raised only
once every insert of the batch has ended. Each table is a ReplacingMergeTree keyed so
that writing the same batch again rewrites the same rows.

A partition's state is two rows: its progress (``partition_state``, every batch: what
``pipeline_progress`` shows) and, every few seconds, its whole snapshot
(``partition_snapshots``), which is what a worker resumes from. A crash anywhere after the
last snapshot makes the next owner replay from it and rewrite identical rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime

from core.units import US_PER_SECOND, utc_datetime
from streams.contract import BatchOutcome
from streams.errors import StateMissingError
from streams.output.native import LEDGER_COLUMNS, LEDGER_TABLE
from streams.processing.aggregate import SAMPLE_COUNT, RollupKey
from streams.processing.grains import DAY, HOUR, MONTH, SEEDED_FROM_MINUTES, seed_from_finer
from streams.processing.state import PartitionState
from warehouse.client import Warehouse

ROLLUP_COLUMNS = (
    "tenant_id", "sku", "cluster", "window_start", "source_partition",
    "allocated_us", "busy_us", "unhealthy_us", "energy_mj", "sample_count",
    "version", "written_at",
)  # fmt: skip
ADJUSTMENT_COLUMNS = (
    "tenant_id", "sku", "cluster", "window_start", "source_partition", "source_offset",
    "allocated_us", "busy_us", "unhealthy_us", "energy_mj", "sample_count", "recorded_at",
)  # fmt: skip
# Grain -> (partials table, adjustments table, window column, window value from its µs).
COARSE_TABLES: dict[str, tuple[str, str, str, Callable[[int], object]]] = {
    HOUR.name: ("usage_hour_partials", "usage_hour_adjustments", "hour_start", utc_datetime),
    DAY.name: (
        "usage_day_partials",
        "usage_day_adjustments",
        "day",
        lambda t_us: utc_datetime(t_us).date(),
    ),
    MONTH.name: (
        "usage_month_partials",
        "usage_month_adjustments",
        "month",
        lambda t_us: utc_datetime(t_us).date(),
    ),
}
REJECTED_COLUMNS = (
    "source_topic", "source_partition", "source_offset", "reason", "detail",
    "node_id", "boot_id", "seq", "payload_size", "payload_sha256", "payload", "rejected_at",
)  # fmt: skip
GAP_COLUMNS = (
    "node_id", "boot_id", "first_missing", "last_missing", "first_seen", "is_open",
    "source_partition", "version", "updated_at",
)  # fmt: skip
NODE_COLUMNS = (
    "node_id", "boot_id", "source_partition", "last_seq", "open_gaps", "last_seen_at",
    "version", "written_at",
)  # fmt: skip
PROGRESS_COLUMNS = (
    "topic", "partition", "applied_offset", "accepted_reports", "accepted_samples",
    "duplicate_reports", "late_reports", "rejected_reports", "open_gaps", "closed_before_us",
)  # fmt: skip
SNAPSHOT_COLUMNS = ("topic", "partition", "applied_offset", "state", "written_at")


# The snapshot a worker resumes from: the highest offset's, in partition_snapshots or, if
# stored before migration 0022, in partition_state (whose state is empty from then on).
LATEST_SNAPSHOT_SQL = (
    "SELECT hex(argMax(state, applied_offset)), count() > 0 FROM ("
    "SELECT applied_offset, state FROM partition_snapshots "
    "WHERE topic = %(topic)s AND partition = %(partition)s "
    "UNION ALL SELECT applied_offset, state FROM partition_state "
    "WHERE topic = %(topic)s AND partition = %(partition)s AND state != ''"
    ") AS stored"
)
PROGRESS_SQL = (
    "SELECT count() > 0, max(applied_offset) FROM partition_state "
    "WHERE topic = %(topic)s AND partition = %(partition)s"
)


def wall_clock_us() -> int:
    return int(datetime.now(tz=UTC).timestamp() * US_PER_SECOND)


class WarehouseSink:
    def __init__(self, warehouse: Warehouse, clock_us: Callable[[], int] = wall_clock_us) -> None:
        self.warehouse = warehouse
        self._clock_us = clock_us
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="ledger-insert")

    def write(self, outcome: BatchOutcome, state: PartitionState) -> None:
        self.write_many([(outcome, state_row(state, snapshot=True))])

    def write_many(self, batch: list[tuple[BatchOutcome, StateRow]]) -> None:
        """One insert per table for all partitions of a batch; then the snapshots taken,
        and every partition's progress last."""
        now = utc_datetime(self._clock_us())
        outcomes = [outcome for outcome, _ in batch]
        # Two requests at once: ClickHouse parses and sorts each insert in one thread.
        cut = (len(outcomes) + 1) // 2
        ledger = [
            self._pool.submit(self._insert_ledger, part)
            for part in (outcomes[:cut], outcomes[cut:])
        ]
        try:
            self._insert_rows(outcomes, now)
        except BaseException:
            wait(ledger)  # no insert of this batch is left running once its failure is raised
            raise
        for done in ledger:
            done.result()  # re-raises the insert's failure: then no state is written
        self.warehouse.insert(
            "partition_snapshots",
            SNAPSHOT_COLUMNS,
            [(*row.progress[:3], row.snapshot, now) for _, row in batch if row.snapshot],
        )
        self.warehouse.insert(
            "partition_state",
            (*PROGRESS_COLUMNS, "written_at"),
            [(*row.progress, now) for _, row in batch],
        )

    def _insert_rows(self, outcomes: list[BatchOutcome], now: datetime) -> None:
        """The driver's inserts: rejected reports, rollups, adjustments, gaps, node progress."""
        insert = self.warehouse.insert
        insert(
            "rejected_reports",
            REJECTED_COLUMNS,
            [
                (
                    r.message.topic,
                    r.message.partition,
                    r.message.offset,
                    r.reason,
                    r.detail,
                    r.node_id,
                    r.boot_id,
                    max(r.seq, -1),
                    len(r.message.value),
                    hashlib.sha256(r.message.value).hexdigest(),
                    r.message.value,
                    now,
                )
                for outcome in outcomes
                for r in outcome.rejections
            ],
        )
        insert(
            "usage_rollup_partials",
            ROLLUP_COLUMNS,
            [
                (
                    *row.key[:3],
                    utc_datetime(row.key.window_start_us),
                    row.partition,
                    *row.sums[:SAMPLE_COUNT],
                    row.sums[SAMPLE_COUNT],
                    row.version,
                    now,
                )
                for outcome in outcomes
                for row in outcome.rollups
            ],
        )
        insert(
            "usage_adjustments",
            ADJUSTMENT_COLUMNS,
            [
                (
                    *row.key[:3],
                    utc_datetime(row.key.window_start_us),
                    row.partition,
                    row.offset,
                    *row.sums[:SAMPLE_COUNT],
                    row.sums[SAMPLE_COUNT],
                    now,
                )
                for outcome in outcomes
                for row in outcome.adjustments
            ],
        )
        for grain, (partials, adjustments, column, when) in COARSE_TABLES.items():
            insert(
                partials,
                _with_window(ROLLUP_COLUMNS, column),
                [
                    (
                        *row.key[:3],
                        when(row.key.window_start_us),
                        row.partition,
                        *row.sums,
                        row.version,
                        now,
                    )
                    for outcome in outcomes
                    for row in outcome.coarse_rollups.get(grain, ())
                ],
            )
            insert(
                adjustments,
                _with_window(ADJUSTMENT_COLUMNS, column),
                [
                    (
                        *row.key[:3],
                        when(row.key.window_start_us),
                        row.partition,
                        row.offset,
                        *row.sums,
                        now,
                    )
                    for outcome in outcomes
                    for row in outcome.coarse_adjustments.get(grain, ())
                ],
            )
        insert(
            "seq_gaps",
            GAP_COLUMNS,
            [
                (
                    g.node_id,
                    g.boot_id,
                    g.first_missing,
                    g.last_missing,
                    utc_datetime(g.first_seen_us),
                    int(g.is_open),
                    outcome.partition,
                    g.version,
                    now,
                )
                for outcome in outcomes
                for g in outcome.gap_rows
            ],
        )
        insert(
            "node_progress",
            NODE_COLUMNS,
            [
                (
                    n.node_id,
                    n.boot_id,
                    outcome.partition,
                    n.last_seq,
                    n.open_gaps,
                    utc_datetime(n.seen_us),
                    n.version,
                    now,
                )
                for outcome in outcomes
                for n in outcome.node_rows
            ],
        )

    def _insert_ledger(self, outcomes: list[BatchOutcome]) -> None:
        self.warehouse.insert_native(
            LEDGER_TABLE,
            LEDGER_COLUMNS,
            b"".join(o.ledger for o in outcomes),
            sum(o.ledger_rows for o in outcomes),
        )


@dataclass(frozen=True)
class StateRow:
    """A partition's state as a batch left it: its progress (PROGRESS_COLUMNS) and, when
    this batch stores it, its whole snapshot."""

    progress: tuple[object, ...]
    snapshot: bytes | None

    @property
    def applied_offset(self) -> int:
        return int(self.progress[2])  # type: ignore[call-overload]


def _with_window(columns: tuple[str, ...], window_column: str) -> tuple[str, ...]:
    return tuple(window_column if c == "window_start" else c for c in columns)


def state_row(state: PartitionState, snapshot: bool) -> StateRow:
    """A partition's state as stored, taken when called: the processor may go on with the
    next batch while this one is being written. The whole snapshot only when asked: it
    costs tens of times what processing a batch does."""
    c = state.counters
    progress = (
        state.topic,
        state.partition,
        state.applied_offset,
        c["accepted_reports"],
        c["accepted_samples"],
        c["duplicate_reports"],
        c["late_reports"],
        c["rejected_reports"],
        state.open_gaps(),
        state.closed_before_us,
    )
    return StateRow(progress, state.to_snapshot() if snapshot else None)


def load_state(warehouse: Warehouse, topic: str, partition: int) -> PartitionState:
    """The partition's latest stored snapshot, or a fresh state if it was never processed.

    Snapshots stored before migration 0022 are in ``partition_state`` itself."""
    rows = warehouse.execute(LATEST_SNAPSHOT_SQL, {"topic": topic, "partition": partition})
    blob_hex, found = rows[0]
    if not found:
        _check_never_processed(warehouse, topic, partition)
        return PartitionState(topic, partition)
    state = PartitionState.from_snapshot(bytes.fromhex(blob_hex))
    if state.unseeded & {g.name for g in SEEDED_FROM_MINUTES}:
        seed_coarse_windows(warehouse, state)
    if MONTH.name in state.unseeded:
        seed_month_windows(warehouse, state)
    state.unseeded = frozenset()
    if state.late_folds_after is None:
        state.late_folds_after = written_late_through(warehouse, state)
    return state


def check_states_stored(warehouse: Warehouse, topic: str) -> None:
    """Before a worker joins its group: every partition of ``topic`` with progress has a
    snapshot to resume from (raises :class:`StateMissingError`, naming the first that
    has none)."""
    rows = warehouse.execute(
        "SELECT DISTINCT partition FROM partition_state WHERE topic = %(topic)s ORDER BY partition",
        {"topic": topic},
    )
    for (partition,) in rows:
        where = {"topic": topic, "partition": int(partition)}
        if not warehouse.execute(LATEST_SNAPSHOT_SQL, where)[0][1]:
            _check_never_processed(warehouse, topic, int(partition))


def _check_never_processed(warehouse: Warehouse, topic: str, partition: int) -> None:
    """A partition with progress but no snapshot lost its state: starting it afresh would
    meter its next messages without the seqs and windows before them."""
    ((found, applied),) = warehouse.execute(PROGRESS_SQL, {"topic": topic, "partition": partition})
    if found:
        raise StateMissingError(
            f"{topic}/{partition} was applied through offset {applied} but no snapshot of its "
            "state is stored (partition_snapshots emptied?): restore partition_snapshots, or "
            "empty partition_state and the partition's rows to meter it again from the start"
        )


def written_late_through(warehouse: Warehouse, state: PartitionState) -> int:
    """The last offset whose late usage this partition's rows may hold as an adjustment at
    every grain: a state of format 4 or older was saved by a worker that wrote late usage
    so, and it may have written batches past its state before it stopped. Their replay
    must decide the same (streams/processing/grains.py); later messages join open windows."""
    union = " UNION ALL ".join(
        f"SELECT source_offset FROM {table} WHERE source_partition = %(p)s "
        "AND source_offset >= %(after)s"
        for table in ("usage_adjustments", *(t[1] for t in COARSE_TABLES.values()))
    )
    # Offsets are UInt64: "after the state" as >= applied + 1, which is 0 for a state
    # that applied nothing (its offset 0 must count).
    params = {"p": state.partition, "after": state.applied_offset + 1}
    ((count, highest),) = warehouse.execute(
        f"SELECT count(), max(source_offset) FROM ({union}) AS late", params
    )
    return max(int(highest), state.applied_offset) if count else state.applied_offset


def _closed_partials(
    warehouse: Warehouse, state: PartitionState, table: str, column: str, start_us: int
) -> list[tuple[RollupKey, list[int]]]:
    """The final partials this partition wrote to ``table`` for the windows from
    ``start_us`` up to the state's ``closed_before_us``.

    A window closed before ``closed_before_us`` holds its final sums in the warehouse, at
    a version no later than the state's offset (a closed window only gets adjustments).
    """
    day = column == "day"
    when = (lambda t: utc_datetime(t).date()) if day else utc_datetime
    seconds = f"toUInt32(toDateTime({column}))" if day else f"toUInt32({column})"
    end_us = DAY.start_of(state.closed_before_us) if day else state.closed_before_us
    rows = warehouse.execute(
        f"SELECT tenant_id, sku, cluster, {seconds}, argMax(allocated_us, version), "
        "argMax(busy_us, version), argMax(unhealthy_us, version), argMax(energy_mj, version), "
        f"argMax(sample_count, version) FROM {table} "
        f"WHERE source_partition = %(p)s AND {column} >= %(from)s AND {column} < %(to)s "
        f"AND version <= %(v)s GROUP BY tenant_id, sku, cluster, {column}",
        {
            "p": state.partition,
            "from": when(start_us),
            "to": when(end_us),
            "v": max(state.applied_offset, 0),
        },
    )
    return [
        (RollupKey(t, s, c, int(w) * US_PER_SECOND), [int(x) for x in sums])
        for t, s, c, w, *sums in rows
    ]


def seed_coarse_windows(warehouse: Warehouse, state: PartitionState) -> None:
    """The open hour and day windows of a state saved before they were kept (snapshot
    format 2 or older), rebuilt from the minute partials this partition wrote and the
    open minutes of the state: exactly what they would hold had they been kept all along.
    """
    start_us = DAY.start_of(state.closed_before_us)
    closed = _closed_partials(warehouse, state, "usage_rollup_partials", "window_start", start_us)
    seed_from_finer(
        state.coarse, SEEDED_FROM_MINUTES, closed, state.windows, state.closed_before_us
    )


def seed_month_windows(warehouse: Warehouse, state: PartitionState) -> None:
    """The open month windows of a state saved before they were kept (format 3 or
    older), from the closed day partials of the open month and the state's open days."""
    closed_before = state.closed_before_us
    closed = _closed_partials(
        warehouse, state, "usage_day_partials", "day", MONTH.start_of(closed_before)
    )
    open_days = {
        key: sums
        for key, sums in state.coarse[DAY.name].items()
        if DAY.end_of(key.window_start_us) > closed_before
    }
    seed_from_finer(state.coarse, (MONTH,), closed, open_days, closed_before)
