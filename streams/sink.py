"""Writing a batch's outcome to ClickHouse: rejected reports, then touched rollup rows.

Both tables are ReplacingMergeTree keyed so that writing the same batch again rewrites the
same rows: a retry after a timeout, or a batch redelivered after a crash, is harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

from meter.units import US_PER_SECOND
from streams.aggregate import SAMPLE_COUNT
from streams.processor import BatchOutcome, wall_clock_us
from warehouse.client import Warehouse

ROLLUP_TABLE = "usage_rollup_partials"
ROLLUP_COLUMNS = (
    "tenant_id", "sku", "cluster", "window_start", "source_partition",
    "allocated_us", "busy_us", "unhealthy_us", "energy_mj", "sample_count",
    "version", "written_at",
)  # fmt: skip
REJECTED_TABLE = "rejected_reports"
REJECTED_COLUMNS = (
    "source_topic", "source_partition", "source_offset", "reason", "detail",
    "node_id", "boot_id", "seq", "payload_size", "payload_sha256", "payload", "rejected_at",
)  # fmt: skip


def _utc(t_us: int) -> datetime:
    return datetime.fromtimestamp(t_us // US_PER_SECOND, tz=UTC)


class WarehouseSink:
    def __init__(self, warehouse: Warehouse, clock_us: Callable[[], int] = wall_clock_us) -> None:
        self.warehouse = warehouse
        self._clock_us = clock_us

    def write(self, outcome: BatchOutcome) -> None:
        now = _utc(self._clock_us())
        rejected = [
            (
                r.message.topic,
                r.message.partition,
                r.message.offset,
                r.reason,
                r.detail,
                r.node_id,
                r.boot_id,
                r.seq,
                len(r.message.value),
                hashlib.sha256(r.message.value).hexdigest(),
                r.message.value,
                now,
            )
            for r in outcome.rejections
        ]
        self.warehouse.insert(REJECTED_TABLE, REJECTED_COLUMNS, rejected)
        rollups = [
            (
                row.key.tenant_id,
                row.key.sku,
                row.key.cluster,
                _utc(row.key.window_start_us),
                row.partition,
                *row.sums[:SAMPLE_COUNT],
                row.sums[SAMPLE_COUNT],
                row.version,
                now,
            )
            for row in outcome.rollups
        ]
        self.warehouse.insert(ROLLUP_TABLE, ROLLUP_COLUMNS, rollups)
