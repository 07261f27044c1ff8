"""Remembering which periods reconciliation found equal, and over which data.

A ClickHouse table part never changes once written: an insert adds parts, a merge
replaces parts with new ones, a mutation (``ALTER … DELETE``) rewrites them. So the
active parts of the partitions a period's comparison reads say whether anything it read
has changed since. ``meter reconcile`` records a period whose ledger check passed with the
fingerprint of those parts, and on the next run skips the comparison while the fingerprint
is the same; any change, a merge included, makes it compare again. Only a pass is
remembered: a period that differed is always compared (and named) again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from billing.rating import Period
from warehouse.client import Warehouse
from warehouse.compaction import COMPARED_TABLES, partitions_read

log = logging.getLogger(__name__)

# Bump when what the comparison compares changes.
COMPARISON_VERSION = "compare_day/1"


@dataclass(frozen=True)
class Verified:
    ledger_keys: int
    grain_keys: int
    seconds: float


def fingerprint(warehouse: Warehouse, period: Period) -> str:
    """SHA-256 of the active parts of the period's month partitions, and the month before
    (the ledger is read from a day before the period), of every table compared."""
    months = partitions_read(period.start_us, period.end_us)
    rows = warehouse.execute(
        "SELECT table, partition, name, rows, bytes_on_disk, toUInt32(modification_time) "
        "FROM system.parts WHERE database = %(db)s AND active AND has(%(tables)s, table) "
        "AND has(%(months)s, partition) ORDER BY table, partition, name",
        {"db": warehouse.settings.database, "tables": list(COMPARED_TABLES), "months": months},
    )
    digest = hashlib.sha256(COMPARISON_VERSION.encode())
    for row in rows:
        digest.update(("\t".join(map(str, row)) + "\n").encode())
    return digest.hexdigest()


def recall(warehouse: Warehouse, period: Period, print_: str) -> Verified | None:
    rows = warehouse.execute(
        "SELECT ledger_keys, grain_keys, seconds FROM reconciled_periods "
        "WHERE period = %(p)s AND fingerprint = %(f)s LIMIT 1",
        {"p": period.label, "f": print_},
    )
    return Verified(int(rows[0][0]), int(rows[0][1]), float(rows[0][2])) if rows else None


def remember(warehouse: Warehouse, period: Period, print_: str, found: Verified) -> bool:
    """Record a pass; False (and a log line) where the user may not write."""
    try:
        warehouse.execute(
            "INSERT INTO reconciled_periods (period, fingerprint, ledger_keys, grain_keys, "
            "seconds, verified_at) SELECT %(p)s, %(f)s, %(l)s, %(g)s, %(s)s, now()",
            {
                "p": period.label,
                "f": print_,
                "l": found.ledger_keys,
                "g": found.grain_keys,
                "s": found.seconds,
            },
        )
    except Exception as exc:  # a read-only user: compare in full next time too
        if "readonly" not in str(exc).lower() and "Code: 164" not in str(exc):
            raise
        log.info("reconcile: not recording the pass (read-only user)")
        return False
    return True
