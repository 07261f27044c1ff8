"""Filling the hour and day rollups (migration 0011) from the minute tables, a day at a time.

Rows the worker wrote before migration 0011 exist only at minute grain. Each hour and day
partial is the sum of the latest version of every minute partial it covers, with the
highest of their versions, exactly as the worker would have written it; each coarse
adjustment is the sum of one late report's minute adjustments in that hour or day. A day
at a time keeps every GROUP BY within the server's memory limit whatever the history, and
lets the operator watch it go. Running it again rewrites identical rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from meter.units import US_PER_DAY, US_PER_SECOND, USAGE_COUNTERS, utc_datetime
from warehouse.client import Warehouse

log = logging.getLogger(__name__)

_COUNTERS = (*USAGE_COUNTERS, "sample_count")
# (coarse table, its window column, the expression of it from a minute window_start)
_GRAINS = (
    ("hour", "hour_start", "toStartOfHour(window_start)"),
    ("day", "day", "toDate(window_start)"),
)


def _partials_sql(grain: str, column: str, expression: str) -> str:
    picked = ", ".join(f"argMax({c}, version) AS m_{c}" for c in _COUNTERS)
    summed = ", ".join(f"sum(m_{c})" for c in _COUNTERS)
    return (
        f"INSERT INTO usage_{grain}_partials (tenant_id, sku, cluster, {column}, "
        f"source_partition, {', '.join(_COUNTERS)}, version, written_at) "
        f"SELECT tenant_id, sku, cluster, {expression} AS coarse_start, source_partition, "
        f"{summed}, max(m_version), now() FROM ("
        f"SELECT tenant_id, sku, cluster, window_start, source_partition, {picked}, "
        "max(version) AS m_version FROM usage_rollup_partials "
        "WHERE window_start >= %(from)s AND window_start < %(to)s "
        "GROUP BY tenant_id, sku, cluster, window_start, source_partition) AS minutes "
        "GROUP BY tenant_id, sku, cluster, coarse_start, source_partition"
    )


def _adjustments_sql(grain: str, column: str, expression: str) -> str:
    picked = ", ".join(f"any({c}) AS m_{c}" for c in _COUNTERS)
    summed = ", ".join(f"sum(m_{c})" for c in _COUNTERS)
    return (
        f"INSERT INTO usage_{grain}_adjustments (tenant_id, sku, cluster, {column}, "
        f"source_partition, source_offset, {', '.join(_COUNTERS)}, recorded_at) "
        f"SELECT tenant_id, sku, cluster, {expression} AS coarse_start, source_partition, "
        f"source_offset, {summed}, now() FROM ("
        f"SELECT tenant_id, sku, cluster, window_start, source_partition, source_offset, "
        f"{picked} FROM usage_adjustments "
        "WHERE window_start >= %(from)s AND window_start < %(to)s "
        "GROUP BY tenant_id, sku, cluster, window_start, source_partition, source_offset"
        ") AS minutes GROUP BY tenant_id, sku, cluster, coarse_start, source_partition, "
        "source_offset"
    )


STATEMENTS = tuple(
    sql for grain in _GRAINS for sql in (_partials_sql(*grain), _adjustments_sql(*grain))
)


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


def backfill_coarse(
    warehouse: Warehouse, progress: Callable[[int, int, int], None] | None = None
) -> int:
    """Hour and day rollups of every day that has minute rollups; returns the days done.
    ``progress(done, total, day_us)`` is called after each day."""
    days = minute_days(warehouse)
    for done, day_us in enumerate(days, start=1):
        fill_day(warehouse, day_us)
        if progress is not None:
            progress(done, len(days), day_us)
    return len(days)


def log_progress(done: int, total: int, day_us: int) -> None:
    """Progress for an operator: every 30th day and the last."""
    if done == total or done % 30 == 0:
        day = datetime.fromtimestamp(day_us // US_PER_SECOND, tz=UTC).date()
        log.warning("hour and day rollups: %d of %d days filled (through %s)", done, total, day)
