"""Copying every earlier ledger table into ``usage_ledger_holdings`` (migration 0013).

The ledger was one row per sample (0004, now ``usage_ledger_by_sample``), then one row per
report with a sample's fields in arrays (0007, ``usage_ledger_reports``), then one packed
row per report (0008 and 0012, ``usage_ledger_packed_0008`` and ``usage_ledger_packed``).
Each is rewritten here as the worker writes today: a row per report and GPU holding, in
``streams.output.native.holding_rows`` order, a month at a time with progress. Packed rows of
ordinary size are converted in ClickHouse; a packed row of many holdings and samples
(converting it in SQL costs holdings x samples) and the two older forms, which only early
installations hold, are converted here in Python from the deduplicated rows. Nothing is
deleted: the old tables stay as they were until an operator drops them. Running the copy
again writes identical rows, which the table's key deduplicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from core.units import US_PER_DAY, US_PER_SECOND, utc_datetime
from streams.output.native import (
    LEDGER_COLUMNS,
    LEDGER_HOLDING_COLUMNS,
    LEDGER_REPORT_COLUMNS,
    LEDGER_SAMPLE_COLUMNS,
    LEDGER_TABLE,
    holding_rows,
)
from warehouse.client import Warehouse

log = logging.getLogger(__name__)

# Above this many holdings x samples a packed row is converted in Python.
SQL_CELLS = 4096
_REPORT = ", ".join(name for name, _ in LEDGER_REPORT_COLUMNS)
_HOLDING = tuple(name for name, _ in LEDGER_HOLDING_COLUMNS)
_SAMPLE = tuple(name for name, _ in LEDGER_SAMPLE_COLUMNS)  # the tick, counters, late
_COUNTERS = _SAMPLE[2:-1]
_PACKED = ("usage_ledger_packed_0008", "usage_ledger_packed")
_MONTH = "toYYYYMM(interval_start) = %(month)s"


def packed_sql(table: str) -> str:
    """A packed table's rows of one day as holding rows: its samples spelled out (each
    naming its holding and tick by position), then gathered per holding in report order.
    18.16 cannot capture an array in a lambda reliably ("Unknown identifier"), hence the
    ARRAY JOIN and groupArray rather than arrayFilter by holding."""
    sample = ", ".join(f"x_{c}" for c in _SAMPLE)
    gathered = ", ".join(
        f"arrayMap(x -> tupleElement(x, {i}), s) AS h_{c}" for i, c in enumerate(_SAMPLE, 2)
    )
    return (
        f"INSERT INTO {LEDGER_TABLE} ({', '.join(LEDGER_COLUMNS)}) "
        f"SELECT {_REPORT}, hg, hi, hs, ht, hj, {', '.join(f'h_{c}' for c in _SAMPLE)} FROM ("
        f"SELECT {_REPORT}, any(x_gpu) AS hg, any(x_index) AS hi, any(x_sku) AS hs, "
        f"any(x_tenant) AS ht, any(x_job) AS hj, "
        f"arraySort(groupArray(tuple(n, {sample}))) AS s, {gathered} FROM ("
        f"SELECT {_REPORT}, g, n, arrayElement(gpu_uuids, g) AS x_gpu, "
        "arrayElement(gpu_indexes, g) AS x_index, arrayElement(skus, g) AS x_sku, "
        "arrayElement(tenant_ids, g) AS x_tenant, arrayElement(job_ids, g) AS x_job, "
        "arrayElement(tick_starts_us, i) AS x_tick_start_us, "
        "arrayElement(tick_ends_us, i) AS x_tick_end_us, "
        + ", ".join(f"{c[0]} AS x_{c}" for c in (*_COUNTERS, "late"))
        + f" FROM {table} FINAL ARRAY JOIN arrayEnumerate(gpu_at) AS n, gpu_at AS g, "
        "tick_at AS i, "
        + ", ".join(f"{c} AS {c[0]}" for c in (*_COUNTERS, "late"))
        + " WHERE interval_start >= %(from)s AND interval_start < %(to)s "
        f"AND length(gpu_uuids) * length(gpu_at) <= {SQL_CELLS}) AS samples "
        f"GROUP BY {_REPORT}, g) AS holdings "
        # A day of a large fleet is more than memory holds: let the GROUP BY spill.
        "SETTINGS max_bytes_before_external_group_by = 1000000000"
    )


def _tables(warehouse: Warehouse) -> set[str]:
    return {name for (name,) in warehouse.execute("SHOW TABLES")}


def _months(warehouse: Warehouse, table: str, column: str) -> list[int]:
    rows = warehouse.execute(f"SELECT DISTINCT toYYYYMM({column}) FROM {table}")
    return sorted(int(m) for (m,) in rows)


def _insert(warehouse: Warehouse, rows: Iterator[tuple[Any, ...]], batch: int = 5000) -> int:
    done, pending = 0, []
    for row in rows:
        pending.append(row)
        if len(pending) >= batch:
            done += warehouse.insert(LEDGER_TABLE, LEDGER_COLUMNS, pending)
            pending = []
    return done + warehouse.insert(LEDGER_TABLE, LEDGER_COLUMNS, pending)


def _sample(fields: Sequence[Any]) -> dict[str, Any]:
    return dict(zip((*_HOLDING, *_SAMPLE), fields, strict=True))


def _from_packed(rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    for report, holdings, starts, ends, gpu_at, tick_at, *counters, late in (
        (r[:8], list(zip(*r[8:13], strict=True)), *r[13:]) for r in rows
    ):
        samples = [
            _sample((*holdings[g - 1], starts[t - 1], ends[t - 1], *values, 0))
            for g, t, *values in zip(gpu_at, tick_at, *counters, strict=True)
        ]
        yield from holding_rows(report, samples, late)


def _from_reports(rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    for row in rows:
        samples = [_sample((*fields, 0)) for fields in zip(*row[8:20], strict=True)]
        yield from holding_rows(row[:8], samples, row[20])


def _from_samples(rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """Rows of one sample each, ordered by report; a report's interval is its ticks' span
    (the table had no interval) and its samples are in tick order."""
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j][:3] == rows[i][:3]:
            j += 1
        group = rows[i:j]
        node, boot, seq, cluster, partition, offset = group[0][:6]
        start = min(r[11] for r in group)
        end = max(r[12] for r in group)
        report = (node, boot, seq, cluster, start, end, partition, offset)
        yield from holding_rows(report, [_sample(r[6:]) for r in group], [r[-1] for r in group])
        i = j


_SAMPLE_COLUMNS = ", ".join((*_HOLDING, *_SAMPLE))
# (table, its month column, the query of one month in Python, the conversion)
_IN_PYTHON = (
    (
        "usage_ledger_by_sample",
        "tick_start",
        f"SELECT node_id, boot_id, seq, cluster, source_partition, source_offset, "
        f"{_SAMPLE_COLUMNS} FROM usage_ledger_by_sample FINAL WHERE toYYYYMM(tick_start) = "
        "%(month)s ORDER BY node_id, boot_id, seq, tick_start_us, gpu_index, gpu_uuid",
        _from_samples,
    ),
    (
        "usage_ledger_reports",
        "interval_start",
        f"SELECT {_REPORT}, {', '.join(_HOLDING)}, {', '.join(_SAMPLE)} "
        f"FROM usage_ledger_reports FINAL WHERE {_MONTH}",
        _from_reports,
    ),
    *(
        (
            table,
            "interval_start",
            f"SELECT {_REPORT}, gpu_uuids, gpu_indexes, skus, tenant_ids, job_ids, "
            f"tick_starts_us, tick_ends_us, gpu_at, tick_at, {', '.join(_COUNTERS)}, late "
            f"FROM {table} FINAL WHERE {_MONTH} "
            f"AND length(gpu_uuids) * length(gpu_at) > {SQL_CELLS}",
            _from_packed,
        )
        for table in _PACKED
    ),
)


def _days(warehouse: Warehouse, table: str) -> list[int]:
    rows = warehouse.execute(
        f"SELECT DISTINCT toUInt32(toDateTime(toDate(interval_start))) FROM {table}"
    )
    return sorted(int(day) * US_PER_SECOND for (day,) in rows)


def copy_ledger(warehouse: Warehouse) -> int:
    """Every earlier ledger table's rows, each older form a month at a time, the packed
    tables also a day at a time in ClickHouse; returns the steps done. Logs progress."""
    present = _tables(warehouse)
    steps: list[tuple[str, str, Callable[[], object]]] = []
    for table, column, sql, convert in _IN_PYTHON:
        if table not in present:
            continue
        for month in _months(warehouse, table, column):

            def python(sql=sql, convert=convert, month=month) -> int:  # type: ignore[no-untyped-def]
                return _insert(warehouse, convert(warehouse.execute(sql, {"month": month})))

            steps.append((table, str(month), python))
        if table in _PACKED:
            for day_us in _days(warehouse, table):
                span = {"from": utc_datetime(day_us), "to": utc_datetime(day_us + US_PER_DAY)}
                steps.append(
                    (
                        table,
                        f"{utc_datetime(day_us):%Y-%m-%d}",
                        lambda t=table, p=span: warehouse.execute(packed_sql(t), p),
                    )
                )
    due = _ProgressDue(len(steps))
    for done, (table, when, step) in enumerate(steps, start=1):
        step()
        if due(done):
            log.warning("ledger copy: %d of %d steps done (%s, %s)", done, len(steps), table, when)
    return len(steps)


class _ProgressDue:
    """When a copy logs its progress: every 30 steps, at the end, and whenever a step
    ends 10 s or more after the last line, since a day of a large fleet's ledger takes
    minutes and an operator waiting on the migration must see it move."""

    def __init__(self, total: int, every_s: float = 10.0) -> None:
        self._total = total
        self._every_s = every_s
        self._last = time.monotonic()

    def __call__(self, done: int) -> bool:
        now = time.monotonic()
        if done == self._total or done % 30 == 0 or now - self._last >= self._every_s:
            self._last = now
            return True
        return False


# The ledger as migration 0013 partitioned it, renamed aside by migration 0020.
MOVED_ASIDE = "usage_ledger_holdings_0013"


def copy_moved_aside(warehouse: Warehouse) -> int:
    """Migration 0020: the rows of the ledger renamed aside, copied as they are into the
    table partitioned by key, a UTC day at a time with progress; returns the days copied.
    No FINAL: a row copied twice is deduplicated by the new table's key as by the old
    one's, and a day's copy is a plain read of its parts."""
    if MOVED_ASIDE not in _tables(warehouse):
        return 0
    columns = ", ".join(LEDGER_COLUMNS)
    sql = (
        f"INSERT INTO {LEDGER_TABLE} ({columns}) SELECT {columns} FROM {MOVED_ASIDE} "
        "WHERE interval_start >= %(from)s AND interval_start < %(to)s"
    )
    days = _days(warehouse, MOVED_ASIDE)
    due = _ProgressDue(len(days))
    for done, day_us in enumerate(days, start=1):
        span = {"from": utc_datetime(day_us), "to": utc_datetime(day_us + US_PER_DAY)}
        warehouse.execute(sql, span)
        if due(done):
            log.warning(
                "ledger repartition: %d of %d days copied (through %s)",
                done,
                len(days),
                f"{utc_datetime(day_us):%Y-%m-%d}",
            )
    return len(days)
