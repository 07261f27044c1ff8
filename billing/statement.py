"""A statement as one canonical document: built from rated lines, serialised, digested.

The canonical form is the JSON of the ``statement`` object with sorted keys, no
insignificant whitespace, ASCII only, integers as JSON numbers and every decimal as a
string. Its SHA-256 is the statement's digest; a tenant can recompute it from the JSON file
alone (``meter statements verify FILE``). CSV and HTML are rendered from the same document,
so they carry nothing the digest does not cover.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from billing.contracts import Contract, Tax, Tenant, format_instant, parse_instant
from billing.errors import BillingError
from billing.issuer import Issuer
from billing.rating import KINDS, Line, Period, UsageRow, prorated_minimum, round_money
from core.identity import MIG_SLICES_PER_GPU, gpu_sevenths
from core.units import MJ_PER_KWH, US_PER_GPU_HOUR, US_PER_SECOND, utc_datetime

# 2: rates in plain digits, MIG slice time apart from whole GPUs (usage_summary, daily),
# drafts. 3: issuer, statement number, issue and due dates, taxes. Statements issued in
# an earlier format stay as they were issued.
FORMAT = "gpu-meter-statement/3"
SECTIONS = {
    "usage": "GPU time",
    "energy": "Energy pass-through",
    "commitment_true_up": "Minimum commitment true-up",
    "sla_credit": "SLA credits",
}
ROUNDING_RULE = (
    "Each line amount is rounded once, half up, to the currency's minor unit; "
    "totals are sums of rounded lines."
)


def money(amount: Decimal, places: int) -> str:
    return str(round_money(amount, places))


def rate_text(rate: Decimal, places: int) -> str:
    """A rate for statements: plain digits, never an exponent, with as many decimal places
    as it needs and at least ``places`` (the currency's minor unit): 2.30 USD stays "2.30",
    720 JPY stays "720", 3.333333333 keeps all nine. Rates are read back from ClickHouse
    with nine places, so the contract's own spelling is not what decides."""
    needed = max(0, -rate.normalize().as_tuple().exponent)  # type: ignore[operator]
    return f"{rate:.{max(places, needed)}f}"


def quantity_text(quantity: int, unit: str) -> str:
    """GPU-hours or kWh to 6 places, for people; ``quantity`` is the exact figure."""
    if unit == "gpu_us":
        return f"{Decimal(quantity) / US_PER_GPU_HOUR:.6f}"
    if unit == "energy_mj":
        return f"{Decimal(quantity) / MJ_PER_KWH:.6f}"
    return ""


def _line_doc(number: int, line: Line, places: int) -> dict[str, Any]:
    return {
        "line_no": number,
        "kind": line.kind,
        "for_period": line.for_period,
        "contract_id": line.contract_id,
        "sku": line.sku,
        "cluster": line.cluster,
        "rate_from": format_instant(line.rate_from_us) if line.rate_from_us else "",
        "rate_to": format_instant(line.rate_to_us) if line.rate_to_us else "",
        "quantity": line.quantity,
        "unit": line.unit,
        "quantity_display": quantity_text(line.quantity, line.unit),
        "rate": rate_text(line.rate, places) if line.rate else "",
        "amount": money(line.amount, places),
        **({"correction": line.correction} if line.correction else {}),
    }


def _contract_doc(c: Contract) -> dict[str, Any]:
    return {
        "contract_id": c.contract_id,
        "term_start": format_instant(c.term_start_us),
        "term_end": format_instant(c.term_end_us),
        "committed_gpus": c.committed_gpus,
        "minimum_monthly_commitment": money(c.minimum_monthly_commitment, c.minor_units),
        "energy_rate_per_kwh": rate_text(c.energy_rate_per_kwh, c.minor_units)
        if c.energy_rate_per_kwh is not None
        else "",
        "sla_credit_multiplier": rate_text(c.sla_credit_multiplier, 0),
    }


def _order(line: Line, period: str) -> tuple[Any, ...]:
    # This period's charges first, by kind; then adjustments, oldest period first.
    return (
        line.for_period != period,
        line.for_period,
        KINDS.index(line.kind),
        line.contract_id,
        line.sku,
        line.cluster,
        line.rate_from_us,
    )


@dataclass(frozen=True)
class Heading:
    """Who issues the statement, its number and its issue date (a draft has neither)."""

    issuer: Issuer
    number: str = ""
    issued_on: date | None = None


@dataclass(frozen=True)
class StatementInput:
    tenant: Tenant
    period: Period
    contracts: list[Contract]
    lines: list[Line]  # this period's lines and prior-period adjustments
    usage: list[UsageRow]  # this period's usage, corrections included (summary and chart)
    # period -> the statement that issued it, for each earlier period adjusted here ("" for
    # one never issued, billed here whole)
    adjusted: dict[str, str] = field(default_factory=dict)
    heading: Heading | None = None  # None: composed only to compare its lines
    # contract id -> its tax, for every contract a line bills (this period's or an earlier
    # one's, for an adjustment); a contract without one is charged none
    taxes: dict[str, Tax] = field(default_factory=dict)
    # The corrections this statement bills (their records and the tenant's GPU-µs from
    # each), shown so that every correction line can be traced to who made it and why.
    corrections: list[dict[str, Any]] = field(default_factory=list)


def _minimum_doc(contract: Contract, data: StatementInput, places: int) -> dict[str, Any]:
    """How a contract's minimum was prorated over the month and what it trued up."""
    period = data.period
    start, end = contract.covered(period.start_us, period.end_us)
    prorated = prorated_minimum(contract, start, end, period)
    mine = [
        ln
        for ln in data.lines
        if ln.for_period == period.label and ln.contract_id == contract.contract_id
    ]
    gpu_time = sum((ln.amount for ln in mine if ln.kind == "usage"), Decimal(0))
    true_up = sum((ln.amount for ln in mine if ln.kind == "commitment_true_up"), Decimal(0))
    return {
        "contract_id": contract.contract_id,
        "monthly": money(contract.minimum_monthly_commitment, places),
        "covered_from": format_instant(start),
        "covered_to": format_instant(end),
        "covered_seconds": (end - start) // US_PER_SECOND,
        "month_seconds": (period.end_us - period.start_us) // US_PER_SECOND,
        "prorated": money(prorated, places),
        "gpu_time": money(gpu_time, places),
        "true_up": money(true_up, places),
    }


def _taxes_doc(lines: list[Line], taxes: dict[str, Tax], places: int) -> list[dict[str, Any]]:
    """Per contract with a tax: its lines' subtotal (adjustments included), taxed once at
    its rate and rounded once."""
    out = []
    for contract_id in sorted({ln.contract_id for ln in lines} & taxes.keys()):
        tax = taxes[contract_id]
        taxable = sum((ln.amount for ln in lines if ln.contract_id == contract_id), Decimal(0))
        out.append(
            {
                "contract_id": contract_id,
                "label": tax.label,
                "rate": rate_text(tax.rate, 0),
                "taxable": money(taxable, places),
                "amount": money(taxable * tax.rate, places),
            }
        )
    return out


def _heading_doc(data: StatementInput) -> dict[str, Any]:
    """Issuer, number, issue date and due date; payment terms are those of the contract in
    force at the end of the period (the last to start)."""
    heading = data.heading
    if heading is None:
        return {}
    last = max(data.contracts, key=lambda c: c.term_start_us)
    terms, issued_on = last.payment_terms_days, heading.issued_on
    if terms < 0 and issued_on is not None:
        raise BillingError(
            f"contract {last.contract_id!r} was loaded before payment terms were recorded: add "
            "payment_terms_days to it in the contracts file and load it again (meter contracts "
            "load)"
        )
    return {
        "issuer": heading.issuer.to_doc(),
        "statement_number": heading.number,
        "issue_date": issued_on.isoformat() if issued_on else "",
        "payment_terms_days": terms,
        "due_date": (issued_on + timedelta(days=terms)).isoformat() if issued_on else "",
    }


def build_statement(data: StatementInput) -> dict[str, Any]:
    """The canonical statement document (a plain dict of str, int, list and dict)."""
    currencies = {c.currency for c in data.contracts}
    if len(currencies) != 1:
        raise BillingError(
            f"tenant {data.tenant.tenant_id!r} in {data.period.label}: contracts in "
            f"{sorted(currencies) or 'no currency'}; a statement has exactly one currency"
        )
    currency = currencies.pop()
    places = data.contracts[0].minor_units
    ordered = sorted(data.lines, key=lambda ln: _order(ln, data.period.label))
    lines = [_line_doc(i + 1, ln, places) for i, ln in enumerate(ordered)]
    totals = {kind: Decimal(0) for kind in KINDS}
    adjustments = Decimal(0)
    for ln in ordered:
        if ln.for_period == data.period.label:
            totals[ln.kind] += ln.amount
        else:
            adjustments += ln.amount
    subtotal = sum(totals.values(), Decimal(0)) + adjustments
    taxes = _taxes_doc(ordered, data.taxes, places)
    tax = sum((Decimal(t["amount"]) for t in taxes), Decimal(0))
    # Whole GPUs and MIG slices apart: a slice-hour is not a GPU-hour (billing/README.md).
    daily = {d: [0, 0] for d in data.period.days}
    for row in data.usage:
        day = utc_datetime(row.window_start_us).strftime("%Y-%m-%d")
        if day in daily:
            daily[day][gpu_sevenths(row.sku) != MIG_SLICES_PER_GPU] += row.allocated_us
    whole = [r for r in data.usage if gpu_sevenths(r.sku) == MIG_SLICES_PER_GPU]
    slices = [r for r in data.usage if gpu_sevenths(r.sku) != MIG_SLICES_PER_GPU]
    return {
        "format": FORMAT,
        "statement_id": f"{data.tenant.tenant_id}-{data.period.label}",
        **_heading_doc(data),
        "tenant": {"tenant_id": data.tenant.tenant_id, "name": data.tenant.name},
        "period": {
            "label": data.period.label,
            "start": format_instant(data.period.start_us),
            "end": format_instant(data.period.end_us),
        },
        "currency": currency,
        "rounding": ROUNDING_RULE,
        "contracts": [_contract_doc(c) for c in data.contracts],
        "lines": lines,
        "taxes": taxes,
        "usage_summary": {
            "allocated_us": sum(r.allocated_us for r in data.usage),
            "full_gpu_allocated_us": sum(r.allocated_us for r in whole),
            "mig_slice_allocated_us": sum(r.allocated_us for r in slices),
            # what the slices count as towards committed GPUs, rounded down to the µs
            "mig_gpu_equivalent_us": sum(r.allocated_us * gpu_sevenths(r.sku) for r in slices)
            // MIG_SLICES_PER_GPU,
            "unhealthy_us": sum(r.unhealthy_us for r in data.usage),
            "energy_mj": sum(r.energy_mj for r in data.usage),
        },
        "minimum_commitments": [_minimum_doc(c, data, places) for c in data.contracts],
        "adjusts": {
            p: data.adjusted.get(p, "")
            for p in sorted({ln.for_period for ln in ordered if ln.for_period != data.period.label})
        },
        **({"corrections": data.corrections} if data.corrections else {}),
        "daily_allocated_us": [
            {"date": d, "allocated_us": full, "mig_slice_us": mig}
            for d, (full, mig) in daily.items()
        ],
        "totals": {
            "usage": money(totals["usage"], places),
            "energy": money(totals["energy"], places),
            "commitment_true_up": money(totals["commitment_true_up"], places),
            "sla_credits": money(totals["sla_credit"], places),
            "prior_period_adjustments": money(adjustments, places),
            "subtotal": money(subtotal, places),
            "tax": money(tax, places),
            "total": money(subtotal + tax, places),
        },
    }


def canonical_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(statement: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(statement)).hexdigest()


def json_file_bytes(statement: dict[str, Any]) -> bytes:
    """The JSON file: the statement and its digest, canonical too (so reruns are identical)."""
    return canonical_bytes({"digest_sha256": digest(statement), "statement": statement}) + b"\n"


def mark_draft(statement: dict[str, Any], clock: Any) -> dict[str, Any]:
    """The statement as a DRAFT: named apart from the issued one, dated, never digested."""
    return {
        **statement,
        "statement_id": f"{statement['statement_id']}-DRAFT",
        "draft": True,
        "draft_as_of": clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def is_draft(statement: dict[str, Any]) -> bool:
    return bool(statement.get("draft"))


def draft_file_bytes(statement: dict[str, Any]) -> bytes:
    """A draft's JSON file: the statement marked as a draft, with no digest."""
    return canonical_bytes({"draft": True, "statement": statement}) + b"\n"


def verify_json_file(data: bytes) -> str:
    """The digest of a statement file after checking it; raises BillingError if it lies."""
    try:
        document = json.loads(data)
        if document.get("draft"):
            raise BillingError("this file is a draft statement: not issued, so it has no digest")
        claimed, statement = document["digest_sha256"], document["statement"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BillingError(f"not a statement file: {exc}") from exc
    actual = digest(statement)
    if actual != claimed:
        raise BillingError(f"digest mismatch: file says {claimed}, content hashes to {actual}")
    return actual


def lines_of(statement: dict[str, Any]) -> Iterable[Line]:
    """The rated lines of an issued statement, as they were billed."""
    for doc in statement["lines"]:
        since = parse_instant(doc["rate_from"], "rate_from") if doc["rate_from"] else 0
        until = parse_instant(doc["rate_to"], "rate_to") if doc["rate_to"] else 0
        yield Line(
            doc["kind"],
            doc["for_period"],
            doc["contract_id"],
            doc["sku"],
            doc["cluster"],
            since,
            until,
            doc["quantity"],
            doc["unit"],
            Decimal(doc["rate"] or 0),
            Decimal(doc["amount"]),
            doc.get("correction", ""),
        )
