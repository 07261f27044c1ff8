"""Corrections in ClickHouse: adding them (their usage computed from the ledger), reading
them back for statements and reconciliation. The rules are in ``billing/corrections.py``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billing.contracts import format_instant
from billing.corrections import Correction, check_new
from billing.errors import CorrectionError
from billing.rating import Period, UsageRow
from billing.store import utc_now, windows_closed_before
from core.units import US_PER_SECOND, utc_datetime
from warehouse.client import Warehouse
from warehouse.totals import FIELDS, ledger_totals

_CORRECTION_COLUMNS = (
    "correction_id",
    "kind",
    "tenant_id",
    "to_tenant_id",
    "node_id",
    "gpu_uuid",
    "start_at",
    "end_at",
    "author",
    "reason",
    "ticket",
    "samples",
    "allocated_us",
    "recorded_at",
)
_DELTA_COLUMNS = ("correction_id", "tenant_id", "sku", "cluster", "window_start", *FIELDS)
# Only corrections whose row is written count: the row is the mark of a correction.
_RECORDED = "correction_id IN (SELECT correction_id FROM corrections)"


@dataclass(frozen=True)
class Added:
    correction: Correction
    samples: int
    allocated_us: int  # GPU-µs moved (reattribute) or voided
    recorded: bool  # False: a dry run


def recorded_corrections(warehouse: Warehouse) -> list[Correction]:
    rows = warehouse.execute(
        "SELECT correction_id, any(kind), any(tenant_id), any(to_tenant_id), any(node_id), "
        "any(gpu_uuid), toUInt32(any(start_at)), toUInt32(any(end_at)), any(author), "
        "any(reason), any(ticket) FROM corrections GROUP BY correction_id ORDER BY correction_id"
    )
    return [
        Correction(
            cid,
            kind,
            t,
            to,
            node,
            gpu,
            int(a) * US_PER_SECOND,
            int(b) * US_PER_SECOND,
            author,
            reason,
            ticket,
        )
        for cid, kind, t, to, node, gpu, a, b, author, reason, ticket in rows
    ]


def _deltas(warehouse: Warehouse, c: Correction) -> tuple[list[tuple[Any, ...]], int, int]:
    """The correction's delta rows, from the ledger's samples it selects; and how many
    samples and GPU-µs they hold."""
    match = {"tenant_id": c.tenant_id}
    match |= {"node_id": c.node_id} if c.node_id else {}
    match |= {"gpu_uuid": c.gpu_uuid} if c.gpu_uuid else {}
    selected = ledger_totals(warehouse, start_us=c.start_us, end_us=c.end_us, match=match)
    rows: list[tuple[Any, ...]] = []
    for (_, sku, cluster, window_us), sums in sorted(selected.items()):
        values = [sums[f] for f in FIELDS]
        at = utc_datetime(window_us)
        rows.append((c.correction_id, c.tenant_id, sku, cluster, at, *(-v for v in values)))
        if c.kind == "reattribute":
            rows.append((c.correction_id, c.to_tenant_id, sku, cluster, at, *values))
    samples = sum(s["sample_count"] for s in selected.values())
    return rows, samples, sum(s["allocated_us"] for s in selected.values())


def add_corrections(
    warehouse: Warehouse,
    corrections: list[Correction],
    dry_run: bool = False,
    clock: Callable[[], datetime] = utc_now,
) -> list[Added]:
    """Record ``corrections`` (all or none refused before any write): each must select
    metered usage in windows the pipeline has closed, and none may overlap a recorded one.
    Deltas are written first and the correction row last, so a retried add rewrites the
    same rows and a failed one applies nothing."""
    check_new(corrections, recorded_corrections(warehouse))
    closed = windows_closed_before(warehouse)
    planned = []
    for c in corrections:
        if closed is None or closed < c.end_us:
            raise CorrectionError(
                f"{c.correction_id}: the pipeline has not closed every window before its end "
                "(usage of that time may still arrive): add it once `meter status` shows "
                "the pipeline past it"
            )
        rows, samples, allocated = _deltas(warehouse, c)
        if not samples:
            raise CorrectionError(
                f"{c.correction_id} selects no metered usage ({c.describe()}): check the "
                "tenant, node, GPU and times"
            )
        planned.append((c, rows, samples, allocated))
    if dry_run:
        return [Added(c, samples, allocated, False) for c, _, samples, allocated in planned]
    now = clock().replace(microsecond=0)
    for c, rows, samples, allocated in planned:
        warehouse.insert("usage_correction_deltas", _DELTA_COLUMNS, rows)
        warehouse.insert(
            "corrections",
            _CORRECTION_COLUMNS,
            [
                (
                    c.correction_id,
                    c.kind,
                    c.tenant_id,
                    c.to_tenant_id,
                    c.node_id,
                    c.gpu_uuid,
                    utc_datetime(c.start_us),
                    utc_datetime(c.end_us),
                    c.author,
                    c.reason,
                    c.ticket,
                    samples,
                    allocated,
                    now,
                )
            ],
        )
    return [Added(c, samples, allocated, True) for c, _, samples, allocated in planned]


def correction_rows(
    warehouse: Warehouse, tenant_id: str, periods: list[Period]
) -> dict[str, dict[str, list[UsageRow]]]:
    """period label → correction id → the tenant's correction deltas in that period, per
    (SKU, cluster, minute): what rating adds to the metered usage."""
    out: dict[str, dict[str, list[UsageRow]]] = {p.label: {} for p in periods}
    if not periods:
        return out
    rows = warehouse.execute(
        "SELECT correction_id, sku, cluster, toUInt32(window_start), sum(allocated_us), "
        "sum(unhealthy_us), sum(energy_mj) FROM usage_correction_deltas FINAL "
        f"WHERE tenant_id = %(tenant)s AND window_start >= %(start)s AND window_start < %(end)s "
        f"AND {_RECORDED} GROUP BY correction_id, sku, cluster, window_start "
        "ORDER BY correction_id, sku, cluster, window_start",
        {
            "tenant": tenant_id,
            "start": utc_datetime(min(p.start_us for p in periods)),
            "end": utc_datetime(max(p.end_us for p in periods)),
        },
    )
    for cid, sku, cluster, w, a, u, e in rows:
        at_us = int(w) * US_PER_SECOND
        for p in periods:
            if p.start_us <= at_us < p.end_us:
                out[p.label].setdefault(cid, []).append(
                    UsageRow(sku, cluster, at_us, int(a), int(u), int(e))
                )
    return out


def corrections_touching(warehouse: Warehouse, period: Period) -> list[dict[str, Any]]:
    """Every recorded correction with usage in ``period``: its record and, per tenant, the
    GPU-µs it adds (negative: takes away)."""
    rows = warehouse.execute(
        "SELECT d.correction_id, d.tenant_id, sum(d.allocated_us), any(c.kind), "
        "any(c.author), any(c.reason), any(c.ticket) FROM (SELECT * FROM usage_corrections "
        "WHERE day >= %(first)s AND day < %(end)s) AS d INNER JOIN (SELECT correction_id, "
        "kind, author, reason, ticket FROM corrections) AS c USING correction_id "
        "GROUP BY d.correction_id, d.tenant_id ORDER BY d.correction_id, d.tenant_id",
        {"first": utc_datetime(period.start_us).date(), "end": utc_datetime(period.end_us).date()},
    )
    found: dict[str, dict[str, Any]] = {}
    for cid, tenant, allocated, kind, author, reason, ticket in rows:
        record = {
            "correction_id": cid,
            "kind": kind,
            "author": author,
            "reason": reason,
            "ticket": ticket,
            "allocated_us": {},
        }
        doc = found.setdefault(cid, record)
        doc["allocated_us"][tenant] = int(allocated)
    return list(found.values())


def corrections_billed(warehouse: Warehouse, tenant_id: str, ids: set[str]) -> list[dict[str, Any]]:
    """The records of the corrections ``ids`` as a statement shows them, each with the
    GPU-µs it adds to ``tenant_id`` (negative: takes away)."""
    if not ids:
        return []
    moved = dict(
        warehouse.execute(
            "SELECT correction_id, sum(allocated_us) FROM usage_corrections "
            "WHERE tenant_id = %(tenant)s AND has(%(ids)s, correction_id) GROUP BY correction_id",
            {"tenant": tenant_id, "ids": sorted(ids)},
        )
    )
    return [
        {
            "correction_id": c.correction_id,
            "kind": c.kind,
            "tenant_id": c.tenant_id,
            "to_tenant_id": c.to_tenant_id,
            "node_id": c.node_id,
            "gpu_uuid": c.gpu_uuid,
            "start": format_instant(c.start_us),
            "end": format_instant(c.end_us),
            "author": c.author,
            "reason": c.reason,
            "ticket": c.ticket,
            "allocated_us": int(moved.get(c.correction_id, 0)),
        }
        for c in recorded_corrections(warehouse)
        if c.correction_id in ids
    ]
