"""Closed months merged to one part per table, so that reading them needs no deduplication.

Every usage table is a ReplacingMergeTree: a replay, a superseded partial version or a
copied ledger row is only collapsed when parts merge, so a read of unmerged parts must
deduplicate (``argMax`` per key, ``FINAL``), which is most of what reconciling a month
costs. A partition that is one part made by a merge (level above 0) holds each key once.
``meter compact --period`` merges a closed month's partitions so (``OPTIMIZE … FINAL``);
late usage afterwards adds a part, and the month is read the careful way again until it is
compacted again. Nothing is changed: a merge keeps exactly what a deduplicating read sees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core.units import US_PER_DAY, utc_datetime
from warehouse.client import Warehouse, check_identifier

log = logging.getLogger(__name__)

# Every table a reconciliation of a period reads, the ledger first (the largest).
COMPARED_TABLES = (
    "usage_ledger_holdings",
    "usage_rollup_partials",
    "usage_adjustments",
    "usage_hour_partials",
    "usage_hour_adjustments",
    "usage_day_partials",
    "usage_day_adjustments",
)
# A merge of a month of a large fleet takes minutes; the server goes on merging if the
# client leaves, so a timeout here is reported, not retried.
OPTIMIZE_TIMEOUT_S = 3600


def partitions_read(start_us: int, end_us: int) -> list[str]:
    """The month partitions (``YYYYMM``) a comparison of [start_us, end_us) reads: the
    ledger's are read from a day early (a report's ticks may start in the day after its
    interval does)."""
    months = {f"{utc_datetime(max(start_us - US_PER_DAY, 0)):%Y%m}"}
    day = start_us
    while day < end_us:
        months.add(f"{utc_datetime(day):%Y%m}")
        day += US_PER_DAY
    return sorted(months)


def not_compacted(warehouse: Warehouse, partitions: list[str]) -> list[str]:
    """``table/partition`` for each of ``partitions`` of the compared tables that is not a
    single merged part (an empty partition is compacted)."""
    rows = warehouse.execute(
        "SELECT table, partition, count(), min(level) FROM system.parts "
        "WHERE database = %(db)s AND active AND has(%(tables)s, table) "
        "AND has(%(partitions)s, partition) GROUP BY table, partition ORDER BY table, partition",
        {
            "db": warehouse.settings.database,
            "tables": list(COMPARED_TABLES),
            "partitions": partitions,
        },
    )
    return [f"{t}/{p}" for t, p, parts, level in rows if int(parts) > 1 or int(level) == 0]


def compact(
    warehouse: Warehouse, partitions: list[str], progress: Callable[[str], None] = log.info
) -> list[str]:
    """Merge each of ``partitions`` of every compared table into one part; the
    ``table/partition`` names merged (those already compacted are left alone)."""
    todo = not_compacted(warehouse, partitions)
    for done, name in enumerate(todo, start=1):
        table, partition = name.split("/")
        started = time.monotonic()
        # optimize_throw_if_noop: a merge the server declines (no disk space, a merge
        # already running on those parts) is an error, not a silent nothing.
        warehouse.execute_long(
            f"OPTIMIZE TABLE {check_identifier(table, 'table')} PARTITION {int(partition)} FINAL",
            OPTIMIZE_TIMEOUT_S,
            {"optimize_throw_if_noop": 1},
        )
        progress(
            f"compact: {name} merged in {time.monotonic() - started:.1f} s ({done} of {len(todo)})"
        )
    return todo
