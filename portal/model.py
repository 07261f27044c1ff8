"""The portal's answers, built from what portal/reads.py read: pure functions, no I/O.

Every integer counter leaves as a decimal string (a month of a large tenant is beyond
2^53 GPU-µs, past what a JSON reader in a browser keeps exact), and every GPU-hour figure
as the views compute it: the µs divided by 3.6e9, truncated to 9 places.
"""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, Decimal
from typing import Any

from billing.rating import Period
from core.identity import MIG_SLICES_PER_GPU, gpu_sevenths
from core.units import MJ_PER_KWH, US_PER_GPU_HOUR, US_PER_SECOND, utc_datetime
from portal.reads import Freshness

STALE_AFTER_S = 300
_NINE = Decimal("1e-9")
PROJECTION_RULE = (
    "Straight line: the GPU time used so far in the part of the term inside this month, "
    "divided by the time elapsed of that part (up to the usage-through instant) and "
    "multiplied by its whole length, rounded down to the µs. Projected above the "
    "commitment: overage (billed at the contract rates, like all usage). Projected below "
    "it: the minimum monthly commitment applies, and the statement adds a commitment "
    "true-up line for what usage does not cover. MIG slices count as their sevenths."
)
CHECK_DIGEST = (
    "The JSON file holds the statement and digest_sha256, the SHA-256 of the statement "
    "serialised canonically (keys sorted, no spaces, ASCII). Check it with "
    '`meter verify-statement FILE`, or: python3 -c "import hashlib,json,sys; '
    "d=json.load(open(sys.argv[1])); print(hashlib.sha256(json.dumps(d['statement'], "
    "sort_keys=True, separators=(',',':'), ensure_ascii=True).encode()).hexdigest() == "
    "d['digest_sha256'])\" FILE"
)


def hours_text(gpu_us: int) -> str:
    return f"{(Decimal(gpu_us) / US_PER_GPU_HOUR).quantize(_NINE, rounding=ROUND_DOWN):f}"


def kwh_text(energy_mj: int) -> str:
    return f"{(Decimal(energy_mj) / MJ_PER_KWH).quantize(_NINE, rounding=ROUND_DOWN):f}"


def instant_text(t_us: int) -> str:
    return utc_datetime(t_us).strftime("%Y-%m-%dT%H:%M:%SZ")


def freshness_doc(fresh: Freshness, now_us: int) -> dict[str, Any]:
    if not fresh.partitions:
        return {"usage_through": None, "age_s": None, "stale": True, "stale_after_s": STALE_AFTER_S}
    age_s = max(now_us - fresh.through_us, 0) // US_PER_SECOND
    return {
        "usage_through": instant_text(fresh.through_us),
        "age_s": age_s,
        "stale": age_s > STALE_AFTER_S,
        "stale_after_s": STALE_AFTER_S,
    }


def _counter(value: int) -> str:
    return str(int(value))


def usage_doc(
    tenant_id: str,
    period: Period,
    by_day: list[dict[str, Any]],
    billable: list[dict[str, Any]],
    fresh: dict[str, Any],
) -> dict[str, Any]:
    # Whole GPUs and MIG slices apart, as statements keep them: a slice-hour is not a
    # GPU-hour (billing/README.md). The totals are whole GPUs; slices have their own.
    daily: dict[str, list[int]] = {d: [0, 0] for d in period.days}
    totals = {"allocated_us": 0, "busy_us": 0, "unhealthy_us": 0, "energy_mj": 0}
    mig_us = 0
    for row in by_day:
        whole = _whole(row["sku"])
        daily.setdefault(row["day"], [0, 0])[0 if whole else 1] += row["allocated_us"]
        if not whole:
            mig_us += row["allocated_us"]
            continue
        for key in totals:
            totals[key] += row[key]
    sums = {
        k: sum(r[k] for r in billable if _whole(r["sku"]))
        for k in ("measured_us", "corrections_us", "billable_us", "credited_unhealthy_us")
    }
    mig_billable_us = sum(r["billable_us"] for r in billable if not _whole(r["sku"]))
    return {
        "tenant_id": tenant_id,
        "month": period.label,
        **fresh,
        "totals": {
            "allocated_us": _counter(totals["allocated_us"]),
            "allocated_gpu_hours": hours_text(totals["allocated_us"]),
            "mig_slice_us": _counter(mig_us),
            "mig_slice_hours": hours_text(mig_us),
            "mig_slice_billable_us": _counter(mig_billable_us),
            "busy_us": _counter(totals["busy_us"]),
            "unhealthy_us": _counter(totals["unhealthy_us"]),
            "unhealthy_gpu_hours": hours_text(totals["unhealthy_us"]),
            "energy_mj": _counter(totals["energy_mj"]),
            "energy_kwh": kwh_text(totals["energy_mj"]),
            "measured_us": _counter(sums["measured_us"]),
            "measured_gpu_hours": hours_text(sums["measured_us"]),
            "corrections_us": _counter(sums["corrections_us"]),
            "corrections_gpu_hours": hours_text(sums["corrections_us"]),
            "billable_us": _counter(sums["billable_us"]),
            "billable_gpu_hours": hours_text(sums["billable_us"]),
            "credited_unhealthy_us": _counter(sums["credited_unhealthy_us"]),
            "credited_unhealthy_gpu_hours": hours_text(sums["credited_unhealthy_us"]),
        },
        "daily": [
            {
                "date": d,
                "allocated_us": _counter(full),
                "allocated_gpu_hours": hours_text(full),
                "mig_slice_us": _counter(mig),
            }
            for d, (full, mig) in sorted(daily.items())
        ],
        "by_day": [
            {
                "day": r["day"],
                "sku": r["sku"],
                "cluster": r["cluster"],
                "allocated_us": _counter(r["allocated_us"]),
                "allocated_gpu_hours": hours_text(r["allocated_us"]),
                "busy_us": _counter(r["busy_us"]),
                "unhealthy_us": _counter(r["unhealthy_us"]),
                "energy_mj": _counter(r["energy_mj"]),
            }
            for r in by_day
        ],
        "billable": [
            {
                "sku": r["sku"],
                "cluster": r["cluster"],
                **{
                    k: _counter(r[k])
                    for k in (
                        "measured_us",
                        "corrections_us",
                        "billable_us",
                        "credited_unhealthy_us",
                        "energy_mj",
                    )
                },
                "billable_gpu_hours": hours_text(r["billable_us"]),
            }
            for r in billable
        ],
    }


def _whole(sku: str) -> bool:
    return gpu_sevenths(sku) == MIG_SLICES_PER_GPU


def project(used_us: int, start_us: int, end_us: int, through_us: int) -> int:
    """Month-end GPU time on a straight line over [start, end) seen up to ``through``."""
    if end_us <= start_us:
        return used_us
    elapsed = min(max(through_us, start_us), end_us) - start_us
    if elapsed <= 0 or elapsed >= end_us - start_us:
        return used_us
    return used_us * (end_us - start_us) // elapsed


def position_doc(
    tenant_id: str,
    period: Period,
    positions: list[dict[str, Any]],
    terms: dict[str, tuple[int, int]],
    through_us: int,
    fresh: dict[str, Any],
) -> dict[str, Any]:
    contracts = []
    for p in positions:
        start, end = terms.get(p["contract_id"], (period.start_us, period.end_us))
        projected = project(p["used_gpu_us"], start, end, through_us)
        committed = p["committed_gpu_us"]
        outlook = (
            "overage"
            if projected > committed
            else "commitment true-up"
            if projected < committed
            else "on commitment"
        )
        elapsed = min(max(through_us, start), end) - start
        contracts.append(
            {
                "contract_id": p["contract_id"],
                "currency": p["currency"],
                "committed_gpus": p["committed_gpus"],
                "committed_gpu_us": _counter(committed),
                "committed_gpu_hours": hours_text(committed),
                "used_gpu_us": _counter(p["used_gpu_us"]),
                "used_gpu_hours": hours_text(p["used_gpu_us"]),
                "used_fraction": _fraction(p["used_gpu_us"], committed),
                "mig_slice_us": _counter(p["mig_slice_us"]),
                "elapsed_fraction": _fraction(max(elapsed, 0), end - start),
                "projected_gpu_us": _counter(projected),
                "projected_gpu_hours": hours_text(projected),
                "projected_overage_gpu_hours": hours_text(max(projected - committed, 0)),
                "projected_shortfall_gpu_hours": hours_text(max(committed - projected, 0)),
                "outlook": outlook,
                "minimum_monthly_commitment": p["minimum_monthly_commitment"],
            }
        )
    return {
        "tenant_id": tenant_id,
        "month": period.label,
        **fresh,
        "rule": PROJECTION_RULE,
        "contracts": contracts,
    }


def _fraction(part: int, whole: int) -> str:
    if whole <= 0:
        return "0"
    return f"{(Decimal(part) / Decimal(whole)).quantize(Decimal('1e-6'), rounding=ROUND_DOWN):f}"


def statement_summary(row: dict[str, Any]) -> dict[str, Any]:
    """An issued statement as the list shows it, with its adjustments and corrections."""
    statement = json.loads(row["canonical_json"])
    period = statement["period"]["label"]
    adjustments = [
        {
            "line_no": ln["line_no"],
            "for_period": ln["for_period"],
            "kind": ln["kind"],
            "sku": ln["sku"],
            "amount": ln["amount"],
            "adjusts_statement": statement.get("adjusts", {}).get(ln["for_period"], ""),
            **({"correction": ln["correction"]} if ln.get("correction") else {}),
        }
        for ln in statement["lines"]
        if ln["for_period"] != period or ln.get("correction")
    ]
    stem = row["statement_id"]
    return {
        "period": row["period"],
        "statement_id": stem,
        "statement_number": row["statement_number"],
        "currency": statement["currency"],
        "total": statement["totals"]["total"],
        "issued_at": row["issued_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "digest_sha256": row["digest_sha256"],
        "how_to_check": CHECK_DIGEST,
        "adjustments": adjustments,
        "corrections": [
            {k: str(c.get(k, "")) for k in ("correction_id", "kind", "reason", "ticket")}
            for c in statement.get("corrections", [])
        ],
        "downloads": {
            kind: f"statements/{row['period']}/statement.{kind}" for kind in ("json", "csv", "html")
        },
    }


def gaps_doc(tenant_id: str, gaps: list[dict[str, Any]], now_us: int) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "complete": not gaps,
        "meaning": (
            "An open gap is a run of reports a node numbered but that never arrived: usage "
            "in them is not metered yet (possible under-metering). It closes when they "
            "arrive, and their usage then appears, and is billed, once."
        ),
        "open_gaps": [
            {
                **{k: g[k] for k in ("node_id", "boot_id")},
                "first_missing_seq": str(g["first_missing_seq"]),
                "last_missing_seq": str(g["last_missing_seq"]),
                "missing_reports": str(g["missing_reports"]),
                "first_seen": instant_text(g["first_seen_us"]),
                "open_for_s": max(now_us - g["first_seen_us"], 0) // US_PER_SECOND,
            }
            for g in gaps
        ],
    }
