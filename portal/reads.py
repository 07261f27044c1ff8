"""What the portal reads, and only through these queries: the documented views (and the
ledger table for which nodes served a tenant). ``VIEWS`` is the whole list; the portal's
ClickHouse role is granted exactly these (docker/clickhouse/finance.sql).

Integers (µs, mJ) leave here as Python ints and GPU-hours as the views' ``Decimal``s; the
model (portal/model.py) turns them into the API's strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from billing.rating import Period
from core.units import epoch_us, utc_datetime
from warehouse.client import Warehouse

VIEWS = (
    "portal_token_state",
    "tenants_current",
    "contracts_current",
    "pipeline_progress",
    "usage_by_day",
    "billable_usage_by_month",
    "contract_position_by_month",
    "issued_statement_documents",
    "draft_statements",
    "open_seq_gaps",
    "usage_ledger_holdings",
)

_HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class Freshness:
    """How far the pipeline has got: every partition of the topic metered most recently
    wrote its state at or after ``through_us`` (0: nothing metered yet)."""

    through_us: int
    partitions: int


def _day(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


class Reader:
    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def q(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        return self.warehouse.execute(sql, params or {})

    def freshness(self) -> Freshness:
        # Only the topic written most recently: a topic metered once and retired must not
        # hold "usage through" back for ever.
        rows = self.q(
            "SELECT min(written_at), count() FROM pipeline_progress WHERE topic IN ("
            "SELECT argMax(topic, written_at) FROM pipeline_progress)"
        )
        through, partitions = rows[0] if rows else (None, 0)
        if not partitions:
            return Freshness(0, 0)
        return Freshness(epoch_us(through), int(partitions))

    def tenants(self) -> list[tuple[str, str]]:
        return [
            (t, n)
            for t, n in self.q("SELECT tenant_id, name FROM tenants_current ORDER BY tenant_id")
        ]

    def tenant_name(self, tenant_id: str) -> str | None:
        rows = self.q("SELECT name FROM tenants_current WHERE tenant_id = %(t)s", {"t": tenant_id})
        return str(rows[0][0]) if rows else None

    def usage_by_day(self, tenant_id: str, period: Period) -> list[dict[str, Any]]:
        rows = self.q(
            "SELECT day, sku, cluster, allocated_us, busy_us, unhealthy_us, energy_mj, "
            "allocated_gpu_hours FROM usage_by_day WHERE tenant_id = %(t)s "
            "AND day >= %(first)s AND day < %(end)s ORDER BY day, sku, cluster",
            self._month(tenant_id, period),
        )
        return [
            {
                "day": _day(d),
                "sku": sku,
                "cluster": cluster,
                "allocated_us": int(a),
                "busy_us": int(b),
                "unhealthy_us": int(u),
                "energy_mj": int(e),
                "allocated_gpu_hours": hours,
            }
            for d, sku, cluster, a, b, u, e, hours in rows
        ]

    def billable(self, tenant_id: str, period: Period) -> list[dict[str, Any]]:
        rows = self.q(
            "SELECT sku, cluster, metered_allocated_us, correction_allocated_us, allocated_us, "
            "unhealthy_us, energy_mj FROM billable_usage_by_month WHERE tenant_id = %(t)s "
            "AND month = %(first)s ORDER BY sku, cluster",
            self._month(tenant_id, period),
        )
        return [
            {
                "sku": sku,
                "cluster": cluster,
                "measured_us": int(m),
                "corrections_us": int(c),
                "billable_us": int(b),
                "credited_unhealthy_us": int(u),
                "energy_mj": int(e),
            }
            for sku, cluster, m, c, b, u, e in rows
        ]

    def positions(self, tenant_id: str, period: Period) -> list[dict[str, Any]]:
        rows = self.q(
            "SELECT contract_id, committed_gpus, committed_gpu_us, allocated_us, mig_slice_us, "
            "unhealthy_us, minimum_monthly_commitment, currency "
            "FROM contract_position_by_month WHERE tenant_id = %(t)s AND month = %(first)s "
            "ORDER BY contract_id",
            self._month(tenant_id, period),
        )
        return [
            {
                "contract_id": cid,
                "committed_gpus": int(gpus),
                "committed_gpu_us": int(committed),
                "used_gpu_us": int(used or 0),
                "mig_slice_us": int(mig or 0),
                "unhealthy_us": int(unhealthy or 0),
                "minimum_monthly_commitment": str(minimum),
                "currency": currency,
            }
            for cid, gpus, committed, used, mig, unhealthy, minimum, currency in rows
        ]

    def term_bounds(self, tenant_id: str, period: Period) -> dict[str, tuple[int, int]]:
        """contract_id → (start_us, end_us) of the part of its term inside ``period``."""
        rows = self.q(
            "SELECT contract_id, term_start, term_end FROM contracts_current "
            "WHERE tenant_id = %(t)s",
            {"t": tenant_id},
        )
        return {
            cid: (max(epoch_us(s), period.start_us), min(epoch_us(e), period.end_us))
            for cid, s, e in rows
        }

    def issued(self, tenant_id: str) -> list[dict[str, Any]]:
        rows = self.q(
            "SELECT period, argMin(statement_id, issued_at), argMin(statement_number, issued_at),"
            " argMin(digest_sha256, issued_at), argMin(canonical_json, issued_at), "
            "min(issued_at) FROM issued_statement_documents WHERE tenant_id = %(t)s "
            "GROUP BY period ORDER BY period DESC",
            {"t": tenant_id},
        )
        return [
            {
                "period": p,
                "statement_id": sid,
                "statement_number": number,
                "digest_sha256": digest,
                "canonical_json": text,
                "issued_at": utc_datetime(epoch_us(at)),
            }
            for p, sid, number, digest, text, at in rows
        ]

    def draft(self, tenant_id: str, period: Period) -> tuple[str, Any] | None:
        rows = self.q(
            "SELECT document, drawn_at FROM draft_statements WHERE tenant_id = %(t)s "
            "AND period = %(p)s",
            {"t": tenant_id, "p": period.label},
        )
        return (str(rows[0][0]), rows[0][1]) if rows else None

    def gaps(self, tenant_id: str, most: int = 200) -> list[dict[str, Any]]:
        """Open seq gaps of nodes that served the tenant around when the gap was found
        (its ledger has the tenant's usage on that node and boot in the hour before
        ``first_seen`` or the hour after): reports that may carry its usage and have
        not arrived. Each is looked up in the ledger by its own narrow time range, so the
        question reads a few granules, not the tenant's month."""
        open_gaps = self.q(
            "SELECT node_id, boot_id, first_missing, last_missing, missing_reports, first_seen "
            f"FROM open_seq_gaps ORDER BY first_seen DESC, node_id, boot_id LIMIT {int(most)}"
        )
        if not open_gaps:
            return []
        params: dict[str, Any] = {"t": tenant_id}
        ranges = []
        for i, (node, boot, *_, seen) in enumerate(open_gaps):
            seen_us = epoch_us(seen)
            params.update(
                {
                    f"n{i}": node,
                    f"b{i}": boot,
                    f"a{i}": seen_us - _HOUR_US,
                    f"z{i}": seen_us + _HOUR_US,
                }
            )
            ranges.append(
                f"(node_id = %(n{i})s AND boot_id = %(b{i})s AND interval_start_us >= %(a{i})s"
                f" AND interval_start_us < %(z{i})s)"
            )
        served = set(
            self.q(
                "SELECT DISTINCT node_id, boot_id FROM usage_ledger_holdings "
                f"WHERE tenant_id = %(t)s AND ({' OR '.join(ranges)})",
                params,
            )
        )
        return [
            {
                "node_id": node,
                "boot_id": boot,
                "first_missing_seq": int(first),
                "last_missing_seq": int(last),
                "missing_reports": int(n),
                "first_seen_us": epoch_us(seen),
            }
            for node, boot, first, last, n, seen in sorted(
                open_gaps, key=lambda g: (g[5], g[0], g[1], g[2])
            )
            if (node, boot) in served
        ]

    @staticmethod
    def _month(tenant_id: str, period: Period) -> dict[str, Any]:
        return {
            "t": tenant_id,
            "first": utc_datetime(period.start_us).date(),
            "end": utc_datetime(period.end_us).date(),
        }
