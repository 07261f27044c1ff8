"""``meter reconcile --period YYYY-MM``: do the books agree, is anything missing, where do we stand.

(a) ledger vs rollups per tenant × SKU × cluster × minute window, exactly;
(b) completeness: open seq gaps per node (possible data loss, whatever the period);
(c) contract position per tenant: usage against committed capacity and the minimum;
(d) optionally a supplier invoice compared line by line with metered usage;
(e) corrections: what each moved, and metered, corrected, billable and billed usage per
    tenant side by side.

(a) and (b) decide the exit status; (c) and (d) are findings for finance to act on.
"""

from __future__ import annotations

import csv
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from billing import verified
from billing.contracts import ContractBook
from billing.correction_store import correction_rows, corrections_touching
from billing.errors import BillingError
from billing.rating import Period, prorated_minimum, rate_period, round_money
from billing.store import read_contract_book, read_usage_to_rate, tenants_of_period
from core.identity import MIG_SLICES_PER_GPU, gpu_sevenths
from core.units import US_PER_DAY, US_PER_GPU_HOUR, utc_datetime
from warehouse.client import Warehouse
from warehouse.compaction import not_compacted, partitions_read
from warehouse.month_check import compare_compacted
from warehouse.totals import (
    NO_KEYS,
    Comparison,
    compare_day,
    compare_grains_day,
    compare_ledger_day,
    compare_month,
    period_keys,
)

log = logging.getLogger(__name__)

INVOICE_COLUMNS = (
    "supplier",
    "invoice_id",
    "period",
    "tenant_id",
    "sku",
    "cluster",
    "gpu_hours",
    "amount",
    "currency",
)


@dataclass
class Report:
    period: str
    lines: list[str] = field(default_factory=list)
    ledger_ok: bool = True
    gaps_ok: bool = True
    findings: int = 0

    @property
    def exit_code(self) -> int:
        return 0 if self.ledger_ok and self.gaps_ok else 1

    def say(self, text: str = "") -> None:
        self.lines.append(text)


def _hours(gpu_us: int) -> Decimal:
    return Decimal(gpu_us) / US_PER_GPU_HOUR


def check_ledger(
    warehouse: Warehouse, period: Period, report: Report, recheck: bool = False
) -> None:
    """(a): the minute rollups against the ledger per minute, the hour rollups against the
    minutes per hour, the day rollups against the hours per day and the month rollups
    against the days, key by key, counter by counter."""
    _check_finer_grains(warehouse, period, report, recheck)
    report.say("    month rollups vs days")
    months = compare_month(warehouse, period.start_us, period.end_us)
    _say_differences(report, months, "months", ("days", "month"))


def _check_finer_grains(
    warehouse: Warehouse, period: Period, report: Report, recheck: bool
) -> None:
    """The ledger, minutes, hours and days of (a). A compacted period (``meter compact``)
    is compared in one pass per table (warehouse/month_check.py), any other a day at a
    time, deduplicating. A pass over data unchanged since an earlier pass is not compared
    again (billing/verified.py) unless ``recheck``."""
    before = verified.fingerprint(warehouse, period)
    known = None if recheck else verified.recall(warehouse, period, before)
    report.say("(a) ledger vs rollups, per tenant × SKU × cluster × minute")
    if known is not None:
        report.say(f"  OK   {known.ledger_keys:,} windows, every counter equal")
        report.say("    hour rollups vs minutes, and day rollups vs hours")
        report.say(f"  OK   {known.grain_keys:,} hours and days, every counter equal")
        report.say(
            f"  (as compared earlier in {known.seconds:.0f} s over the same table parts, "
            f"fingerprint {before[:12]}; --recheck compares again)"
        )
        return
    started = time.monotonic()
    partitions = partitions_read(period.start_us, period.end_us)
    unmerged = not_compacted(warehouse, partitions)
    if not unmerged:
        ledger, grains = _compare_compacted(warehouse, period)
        # Late usage written meanwhile makes the reads above unsafe: compare the careful way.
        unmerged = not_compacted(warehouse, partitions)
    if unmerged:
        ledger, grains = _compare_by_day(warehouse, period)
        report.say(
            f"  (compared day by day, deduplicating: {len(unmerged)} partitions not "
            f"compacted, e.g. {unmerged[0]}; after the month is closed, `meter compact "
            f"--period {period.label}` makes this a single pass)"
        )
    _say_differences(report, ledger, "windows", ("ledger", "rollups"))
    report.say("    hour rollups vs minutes, and day rollups vs hours")
    _say_differences(report, grains, "hours and days", ("finer", "coarser"))
    # Remembered only if nothing changed while comparing: the pass belongs to those parts.
    passed = not ledger.differing and not grains.differing
    if passed and verified.fingerprint(warehouse, period) == before:
        found = verified.Verified(ledger.keys, grains.keys, time.monotonic() - started)
        verified.remember(warehouse, period, before, found)


def _compare_by_day(warehouse: Warehouse, period: Period) -> tuple[Comparison, Comparison]:
    ledger, grains = NO_KEYS, NO_KEYS
    days = range(period.start_us, period.end_us, US_PER_DAY)
    started = time.monotonic()
    keys = period_keys(warehouse, period.start_us, period.end_us)
    for done, day_us in enumerate(days, start=1):
        day_ledger, day_grains = compare_day(warehouse, day_us, keys)
        ledger += day_ledger
        grains += day_grains
        if done % 5 == 0 or done == len(days):
            log.info(
                "reconcile %s: %d of %d days compared (%.0f s)",
                period.label,
                done,
                len(days),
                time.monotonic() - started,
            )
    return ledger, grains


def _compare_compacted(warehouse: Warehouse, period: Period) -> tuple[Comparison, Comparison]:
    """One pass per table (warehouse/month_check.py); the days where anything differs
    are compared again window by window, which names what differs."""
    windows, grain_windows, differing = compare_compacted(warehouse, period.start_us, period.end_us)
    ledger, grains = Comparison(windows, 0, []), Comparison(grain_windows, 0, [])
    for day_us in sorted(differing):
        day_ledger = compare_ledger_day(warehouse, day_us)
        day_grains = compare_grains_day(warehouse, day_us)
        ledger += Comparison(0, day_ledger.differing, day_ledger.first)
        grains += Comparison(0, day_grains.differing, day_grains.first)
    if differing:
        log.info(
            "reconcile %s: %d days differ, compared window by window", period.label, len(differing)
        )
    return ledger, grains


def _say_differences(report: Report, found: Comparison, what: str, sides: tuple[str, str]) -> None:
    if not found.differing:
        report.say(f"  OK   {found.keys:,} {what}, every counter equal")
        return
    report.ledger_ok = False
    report.say(f"  FAIL {found.differing:,} differences over {found.keys:,} {what}:")
    for tenant, sku, cluster, window_us, pairs in found.first:
        for counter, (left, right) in pairs.items():
            if left != right:
                report.say(
                    f"    {tenant} {sku} {cluster} window {window_us // 1_000_000}: {counter} "
                    f"{sides[0]}={left} {sides[1]}={right} ({sides[0]} - {sides[1]} = "
                    f"{left - right})"
                )


def check_gaps(warehouse: Warehouse, report: Report) -> None:
    rows = warehouse.execute(
        "SELECT node_id, boot_id, first_missing, last_missing, missing_reports "
        "FROM open_seq_gaps ORDER BY node_id, boot_id, first_missing"
    )
    report.say("(b) completeness: open seq gaps (reports never received)")
    if rows:
        report.gaps_ok = False
        by_node: dict[str, int] = defaultdict(int)
        for node, _, _, _, missing in rows:
            by_node[node] += int(missing)
        report.say(f"  FAIL {len(rows)} open gaps on {len(by_node)} nodes:")
        for node, boot, first, last, missing in rows[:20]:
            report.say(f"    node {node} boot {boot}: seq {first}..{last} ({missing} reports)")
    else:
        report.say("  OK   no open gaps")


def check_positions(
    warehouse: Warehouse, book: ContractBook, period: Period, report: Report
) -> None:
    report.say("(c) contract position")
    tenants = tenants_of_period(warehouse, book, period)
    if not any(c.overlaps(period.start_us, period.end_us) for c in book.contracts):
        report.say("  no contract covers this period")
    issued = {
        tenant: digest
        for tenant, digest in warehouse.execute(
            "SELECT tenant_id, argMin(digest_sha256, issued_at) FROM statements "
            "WHERE period = %(p)s GROUP BY tenant_id",
            {"p": period.label},
        )
    }
    for tenant in tenants:
        usage = read_usage_to_rate(warehouse, book, tenant, period)
        # Billable usage: what was metered, corrected (as statements bill it).
        corrected = correction_rows(warehouse, tenant, [period])[period.label]
        usage += [row for rows in corrected.values() for row in rows]
        contracts = book.contracts_of(tenant, period.start_us, period.end_us)
        # Usage no contract rate covers, the tenant's whole month at once: usage outside
        # every contract's term is flagged too, not just a SKU a contract has no rate for.
        unrated = rate_period(contracts, period, usage)[1]
        if unrated:
            report.findings += 1
            what = "no contract" if not contracts else "usage without a contract rate"
            more = f" (and {len(unrated) - 1} more windows)" if len(unrated) > 1 else ""
            report.say(f"  FLAG {tenant}: {what} in {period.label}: {unrated[0].describe()}{more}")
        for contract in contracts:
            start, end = contract.covered(period.start_us, period.end_us)
            mine = [u for u in usage if start <= u.window_start_us < end]
            # Towards committed GPUs an <N>g MIG slice is N/7 of a GPU (as the view).
            used = sum(u.allocated_us * gpu_sevenths(u.sku) for u in mine) // MIG_SLICES_PER_GPU
            committed = contract.committed_gpus * (end - start)
            lines = rate_period([contract], period, mine)[0]
            amount = round_money(
                sum((ln.amount for ln in lines if ln.kind == "usage"), Decimal(0)),
                contract.minor_units,
            )
            minimum = prorated_minimum(contract, start, end, period)
            over, short = max(used - committed, 0), max(committed - used, 0)
            report.say(
                f"  {tenant} {contract.contract_id}: used {_hours(used):,.6f} GPU-h of "
                f"{_hours(committed):,.6f} committed (overage {_hours(over):,.6f}, "
                f"shortfall {_hours(short):,.6f}); usage {amount:,} {contract.currency} vs "
                f"minimum {minimum:,} → true-up {max(minimum - amount, Decimal(0)):,}; "
                + (
                    f"statement issued ({issued[tenant][:12]}…)"
                    if tenant in issued
                    else "statement not issued"
                )
            )


def check_corrections(warehouse: Warehouse, period: Period, report: Report) -> None:
    report.say("(e) corrections: metered, corrected, billable and billed usage")
    found = corrections_touching(warehouse, period)
    if not found:
        report.say("  no corrections of this period")
        return
    for c in found:
        moved = ", ".join(f"{t} {_hours(us):+,.6f}" for t, us in sorted(c["allocated_us"].items()))
        report.say(
            f"  {c['correction_id']} {c['kind']} by {c['author']} (ticket {c['ticket']}, "
            f"{c['reason']}): {moved} GPU-h"
        )
    tenants = sorted({t for c in found for t in c["allocated_us"]})
    params = {"month": utc_datetime(period.start_us).date(), "p": period.label, "t": tenants}
    usage = {
        tenant: (int(metered), int(corrected), int(billable))
        for tenant, metered, corrected, billable in warehouse.execute(
            "SELECT tenant_id, sum(metered_allocated_us), sum(correction_allocated_us), "
            "sum(allocated_us) FROM billable_usage_by_month WHERE month = %(month)s AND "
            "has(%(t)s, tenant_id) GROUP BY tenant_id",
            params,
        )
    }
    billed = dict(
        warehouse.execute(
            "SELECT tenant_id, sum(quantity) FROM billed_by_period WHERE for_period = %(p)s "
            "AND kind = 'usage' AND has(%(t)s, tenant_id) GROUP BY tenant_id",
            params,
        )
    )
    for tenant in tenants:
        metered, corrected, billable = usage.get(tenant, (0, 0, 0))
        done = int(billed.get(tenant, 0))
        state = "billed" if done == billable else "not yet billed in full (next statement)"
        report.say(
            f"  {tenant}: metered {_hours(metered):,.6f}, corrections "
            f"{_hours(corrected):+,.6f}, billable {_hours(billable):,.6f}, billed "
            f"{_hours(done):,.6f} GPU-h: {state}"
        )


@dataclass(frozen=True)
class InvoiceLine:
    row: int
    supplier: str
    tenant_id: str
    sku: str
    cluster: str
    gpu_hours: Decimal
    amount: Decimal | None


def read_invoice(path: Path, period: Period) -> list[InvoiceLine]:
    """The documented supplier invoice CSV; every bad row is named, nothing is skipped."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise BillingError(f"cannot read supplier invoice {path}: {exc}") from exc
    lines = []
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in INVOICE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BillingError(f"{path}: missing column(s) {', '.join(missing)}")
        for number, row in enumerate(reader, start=2):
            if row["period"] != period.label:
                raise BillingError(
                    f"{path} row {number}: period {row['period']!r} is not {period.label}"
                )
            try:
                hours = Decimal(row["gpu_hours"])
                amount = Decimal(row["amount"]) if row["amount"].strip() else None
            except InvalidOperation as exc:
                raise BillingError(f"{path} row {number}: gpu_hours/amount not a number") from exc
            lines.append(
                InvoiceLine(
                    number,
                    row["supplier"],
                    row["tenant_id"],
                    row["sku"],
                    row["cluster"],
                    hours,
                    amount,
                )
            )
    return lines


def check_invoice(
    warehouse: Warehouse,
    book: ContractBook,
    period: Period,
    path: Path,
    tolerance_gpu_hours: Decimal,
    tolerance_amount: Decimal,
    report: Report,
) -> None:
    invoice = read_invoice(path, period)
    report.say(
        f"(d) supplier invoice {path.name}: {len(invoice)} lines, tolerance "
        f"{tolerance_gpu_hours} GPU-h / {tolerance_amount} per line"
    )
    theirs: dict[tuple[str, str, str], list[InvoiceLine]] = defaultdict(list)
    for line in invoice:
        theirs[(line.tenant_id, line.sku, line.cluster)].append(line)
    ours_us: dict[tuple[str, str, str], int] = defaultdict(int)
    ours_amount: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for tenant in sorted({k[0] for k in theirs}):
        usage = read_usage_to_rate(warehouse, book, tenant, period)
        for u in usage:
            ours_us[(tenant, u.sku, u.cluster)] += u.allocated_us
        contracts = book.contracts_of(tenant, period.start_us, period.end_us)
        for ln in rate_period(contracts, period, usage)[0]:
            if ln.kind == "usage":
                ours_amount[(tenant, ln.sku, ln.cluster)] += ln.amount
    flagged = 0
    for key in sorted(theirs.keys() | ours_us.keys()):
        billed = theirs.get(key, [])
        hours = sum((b.gpu_hours for b in billed), Decimal(0))
        ours = _hours(ours_us.get(key, 0))
        label = "/".join(key)
        rows = ",".join(str(b.row) for b in billed) or "-"
        problems = []
        if not billed:
            problems.append(f"metered {ours:,.6f} GPU-h, not on the invoice")
        elif abs(hours - ours) > tolerance_gpu_hours:
            problems.append(
                f"invoice {hours:,} GPU-h vs metered {ours:,.6f} (difference {hours - ours:+,.6f})"
            )
        amounts = [b.amount for b in billed if b.amount is not None]
        if amounts and key in ours_amount:
            theirs_amount = sum(amounts, Decimal(0))
            if abs(theirs_amount - ours_amount[key]) > tolerance_amount:
                problems.append(f"invoice amount {theirs_amount:,} vs rated {ours_amount[key]:,}")
        if problems:
            flagged += 1
            report.say(f"  FLAG {label} (invoice rows {rows}): " + "; ".join(problems))
        else:
            report.say(f"  OK   {label}: {hours:,} GPU-h (metered {ours:,.6f})")
    report.findings += flagged


def reconcile(
    warehouse: Warehouse,
    period_label: str,
    invoice: Path | None = None,
    tolerance_gpu_hours: Decimal = Decimal("0.01"),
    tolerance_amount: Decimal = Decimal("0.01"),
    recheck: bool = False,
) -> Report:
    period = Period.parse(period_label)
    report = Report(period.label)
    report.say(f"reconciliation for {period.label}")
    check_ledger(warehouse, period, report, recheck)
    check_gaps(warehouse, report)
    book = read_contract_book(warehouse)
    check_positions(warehouse, book, period, report)
    check_corrections(warehouse, period, report)
    if invoice is not None:
        check_invoice(
            warehouse, book, period, invoice, tolerance_gpu_hours, tolerance_amount, report
        )
    verdict = "OK" if report.exit_code == 0 else "FAILED"
    ledger = "ok" if report.ledger_ok else "differs"
    gaps = "none" if report.gaps_ok else "open"
    report.say(f"result: {verdict} (ledger {ledger}, gaps {gaps}, {report.findings} findings)")
    return report
