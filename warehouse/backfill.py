"""Filling the coarse rollups from the finer tables: hours and days from the minutes
(migration 0011), a day at a time, and months from the days (migration 0016), a month at
a time.

Rows the worker wrote before a migration exist only at the finer grains. Each coarse
partial is the sum of the latest version of every finer partial it covers, with the
highest of their versions, exactly as the worker would have written it; each coarse
adjustment is the sum of one late report's finer adjustments in that window. A day (a
month of days) at a time keeps every GROUP BY within the server's memory limit whatever
the history, and lets the operator watch it go. Running it again rewrites identical rows.

It is a step of its migration, run before the migration is recorded, so before any worker
of the new layout has written (a worker refuses a database with pending migrations,
``warehouse/preflight.py``). After that it must not run: a worker adds late usage to
the coarse windows still open (``streams/processing/grains.py``), which the fill would
count again as an adjustment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from core.units import US_PER_DAY, US_PER_SECOND, USAGE_COUNTERS, utc_datetime
from core.windows import month_end
from warehouse.client import Warehouse

log = logging.getLogger(__name__)

_COUNTERS = (*USAGE_COUNTERS, "sample_count")
# (coarse grain, its window column, the expression of it from a finer window, the finer
# grain's tables and window column)
_MINUTES = ("usage_rollup_partials", "usage_adjustments", "window_start")
_DAYS = ("usage_day_partials", "usage_day_adjustments", "day")
_GRAINS = (
    ("hour", "hour_start", "toStartOfHour(window_start)", *_MINUTES),
    ("day", "day", "toDate(window_start)", *_MINUTES),
)
_MONTHS = (("month", "month", "toStartOfMonth(day)", *_DAYS),)


# The end of the coarse window holding a finer window, per grain (DateTime, UTC).
_COARSE_END = {
    "hour": "toStartOfHour(window_start) + 3600",
    "day": "toStartOfDay(window_start) + 86400",
    "month": "toDateTime(addMonths(toStartOfMonth(day), 1), 'UTC')",
}


def _partials_sql(
    grain: str,
    column: str,
    expression: str,
    finer: str,
    finer_late: str,
    finer_column: str,
    joined: str | None = None,
) -> str:
    """The coarse partials: the latest version of every finer partial they cover, summed,
    and the finer adjustments for which ``joined`` holds (late usage the worker added to
    the coarse window because it was still open)."""
    picked = ", ".join(f"argMax({c}, version) AS m_{c}" for c in _COUNTERS)
    summed = ", ".join(f"sum(m_{c})" for c in _COUNTERS)
    window = f"{finer_column} >= %(from)s AND {finer_column} < %(to)s"
    keys = f"tenant_id, sku, cluster, {finer_column}, source_partition"
    late = ""
    if joined is not None:
        late_picked = ", ".join(f"any({c}) AS m_{c}" for c in _COUNTERS)
        late = (
            f" UNION ALL SELECT {keys}, {late_picked}, toUInt64(0) AS m_version "
            f"FROM {finer_late} WHERE {window} AND ({joined}) GROUP BY {keys}, source_offset"
        )
    return (
        f"INSERT INTO usage_{grain}_partials (tenant_id, sku, cluster, {column}, "
        f"source_partition, {', '.join(_COUNTERS)}, version, written_at) "
        f"SELECT tenant_id, sku, cluster, {expression} AS coarse_start, source_partition, "
        f"{summed}, max(m_version), now() FROM ("
        f"SELECT {keys}, {picked}, max(version) AS m_version FROM {finer} WHERE {window} "
        f"GROUP BY {keys}{late}) AS finer "
        "GROUP BY tenant_id, sku, cluster, coarse_start, source_partition"
    )


def _adjustments_sql(
    grain: str,
    column: str,
    expression: str,
    _: str,
    finer: str,
    finer_column: str,
    joined: str | None = None,
) -> str:
    """The coarse adjustments: one late report's finer adjustments in the coarse window,
    summed, but for those ``joined`` says went to the window's partial; recorded when
    the finer ones were."""
    picked = ", ".join(f"any({c}) AS m_{c}" for c in _COUNTERS)
    summed = ", ".join(f"sum(m_{c})" for c in _COUNTERS)
    kept = f" AND NOT ({joined})" if joined is not None else ""
    return (
        f"INSERT INTO usage_{grain}_adjustments (tenant_id, sku, cluster, {column}, "
        f"source_partition, source_offset, {', '.join(_COUNTERS)}, recorded_at) "
        f"SELECT tenant_id, sku, cluster, {expression} AS coarse_start, source_partition, "
        f"source_offset, {summed}, max(m_recorded_at) FROM ("
        f"SELECT tenant_id, sku, cluster, {finer_column}, source_partition, source_offset, "
        f"{picked}, max(recorded_at) AS m_recorded_at FROM {finer} "
        f"WHERE {finer_column} >= %(from)s AND {finer_column} < %(to)s{kept} "
        f"GROUP BY tenant_id, sku, cluster, {finer_column}, source_partition, source_offset"
        ") AS finer GROUP BY tenant_id, sku, cluster, coarse_start, source_partition, "
        "source_offset"
    )


def _statements(grains: tuple[tuple[str, ...], ...], joined: bool) -> tuple[str, ...]:
    out: list[str] = []
    for grain in grains:
        # A finer adjustment joined the coarse window if it was recorded before that closed.
        when = f"{_COARSE_END[grain[0]]} > recorded_at" if joined else None
        out += [_partials_sql(*grain, joined=when), _adjustments_sql(*grain, joined=when)]
    return tuple(out)


# Hours and days from the minutes of [from, to) (DateTime bounds of whole days), and
# months from the days of [from, to) (Date bounds of whole months), as the worker wrote
# them before late pieces joined open windows (snapshot format 4): every late piece an
# adjustment at every grain. The rows a migration fills were written so.
STATEMENTS = _statements(_GRAINS, joined=False)
MONTH_STATEMENTS = _statements(_MONTHS, joined=False)
# The same as a worker writes them now, for rows whose ``recorded_at`` is when the partition
# had closed the minutes before it (the history generator's, bench/history.py): a late
# piece joins each coarse window that had not closed by then.
JOINING_STATEMENTS = _statements(_GRAINS, joined=True)
JOINING_MONTH_STATEMENTS = _statements(_MONTHS, joined=True)


def minute_days(warehouse: Warehouse) -> list[int]:
    """The UTC days (epoch µs of midnight) that hold minute rollups or adjustments."""
    rows = warehouse.execute(
        "SELECT DISTINCT toUInt32(toDateTime(toDate(window_start))) FROM ("
        "SELECT window_start FROM usage_rollup_partials "
        "UNION ALL SELECT window_start FROM usage_adjustments) AS minutes"
    )
    return sorted(int(day) * US_PER_SECOND for (day,) in rows)


def fill_day(warehouse: Warehouse, day_us: int) -> None:
    """The hour and day rollups of one UTC day (starting at ``day_us``) from its minutes."""
    params = {"from": utc_datetime(day_us), "to": utc_datetime(day_us + US_PER_DAY)}
    for sql in STATEMENTS:
        warehouse.execute(sql, params)


Progress = Callable[[int, int, int], None]


def _fill_each(
    warehouse: Warehouse,
    starts: list[int],
    fill: Callable[[Warehouse, int], None],
    progress: Progress | None,
) -> int:
    """``fill`` each window starting at ``starts``; ``progress(done, total, start_us)``
    after each. Returns how many were filled."""
    for done, start_us in enumerate(starts, start=1):
        fill(warehouse, start_us)
        if progress is not None:
            progress(done, len(starts), start_us)
    return len(starts)


def backfill_coarse(warehouse: Warehouse, progress: Progress | None = None) -> int:
    """Hour and day rollups of every day that has minute rollups; returns the days done."""
    return _fill_each(warehouse, minute_days(warehouse), fill_day, progress)


def log_progress(done: int, total: int, day_us: int) -> None:
    """Progress for an operator: every 30th day and the last."""
    if done == total or done % 30 == 0:
        day = datetime.fromtimestamp(day_us // US_PER_SECOND, tz=UTC).date()
        log.warning("coarse rollups: %d of %d filled (through %s)", done, total, day)


def day_months(warehouse: Warehouse) -> list[int]:
    """The UTC months (epoch µs of their first midnight) that hold day rollups or
    adjustments."""
    rows = warehouse.execute(
        "SELECT DISTINCT toUInt32(toDateTime(toStartOfMonth(day))) FROM ("
        "SELECT day FROM usage_day_partials UNION ALL SELECT day FROM usage_day_adjustments"
        ") AS days"
    )
    return sorted(int(month) * US_PER_SECOND for (month,) in rows)


def fill_month(warehouse: Warehouse, month_us: int) -> None:
    """The month rollups of one UTC month (starting at ``month_us``) from its days."""
    params = {"from": utc_datetime(month_us).date(), "to": utc_datetime(month_end(month_us)).date()}
    for sql in MONTH_STATEMENTS:
        warehouse.execute(sql, params)


def backfill_months(warehouse: Warehouse, progress: Progress | None = None) -> int:
    """Month rollups of every month that has day rollups; returns the months done."""
    return _fill_each(warehouse, day_months(warehouse), fill_month, progress)
