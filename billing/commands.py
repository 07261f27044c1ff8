"""The billing subcommands of ``meter``: contracts load, corrections, statements, verify,
reconcile, compact."""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation
from pathlib import Path

from billing.contracts import load_contract_file
from billing.correction_store import add_corrections as record_corrections
from billing.correction_store import recorded_corrections
from billing.corrections import load_corrections_file
from billing.errors import BillingError
from billing.issue import draft_statements, run_statements
from billing.issuer import Issuer, load_issuer_file
from billing.rating import Period
from billing.reconcile import reconcile
from billing.statement import verify_json_file
from billing.store import Clock, store_contracts, utc_now
from core.errors import ConfigError
from core.units import US_PER_GPU_HOUR, epoch_us
from warehouse.client import ClickHouseSettings, Warehouse
from warehouse.compaction import compact, not_compacted, partitions_read
from warehouse.migrate import migrate


def load_contracts(settings: ClickHouseSettings, path: Path) -> int:
    book = load_contract_file(path)  # refused whole, with the field at fault, before any write
    warehouse = Warehouse(settings)
    migrate(warehouse)
    load_id = store_contracts(warehouse, book, hashlib.sha256(path.read_bytes()).hexdigest())
    print(
        f"{settings.database}: loaded {len(book.tenants)} tenants and {len(book.contracts)} "
        f"contracts ({sum(len(c.rates) for c in book.contracts)} rate periods) as load {load_id}"
    )
    return 0


def add_corrections(settings: ClickHouseSettings, path: Path, dry_run: bool = False) -> int:
    corrections = load_corrections_file(path)  # refused whole before any read or write
    added = record_corrections(Warehouse(settings), corrections, dry_run=dry_run)
    if dry_run:
        print("--dry-run: nothing is recorded")
    for a in added:
        verb = "recorded" if a.recorded else "would record"
        print(
            f"{verb} {a.correction.describe()}: {a.samples:,} samples, "
            f"{Decimal(a.allocated_us) / US_PER_GPU_HOUR:,.6f} GPU-h"
        )
    return 0


def list_corrections(settings: ClickHouseSettings, period_label: str | None) -> int:
    found = recorded_corrections(Warehouse(settings))
    if period_label is not None:
        period = Period.parse(period_label)
        found = [c for c in found if c.start_us < period.end_us and period.start_us < c.end_us]
    for c in found:
        print(f"{c.describe()}; by {c.author}, ticket {c.ticket}: {c.reason}")
    if not found:
        print("no corrections" + (f" in {period_label}" if period_label else ""))
    return 0


def statements(
    settings: ClickHouseSettings,
    period: str,
    out: Path,
    tenant: str | None,
    issuer_file: Path | None,
    force: bool = False,
    dry_run: bool = False,
) -> int:
    issuer = issuer_of(issuer_file)
    outcomes = run_statements(
        Warehouse(settings), period, out, tenant, force=force, dry_run=dry_run, issuer=issuer
    )
    if force:
        print("--force: issuing without waiting for the pipeline or for usage")
    if dry_run:
        print("--dry-run: nothing is issued, recorded or written")
    refused = 0
    for o in outcomes:
        if o.status == "refused":
            refused += 1
            print(f"{o.tenant_id:<18} REFUSED  {o.detail}")
            continue
        print(f"{o.tenant_id:<18} {o.status:<28} total {o.total:>18}  sha256 {o.digest_sha256}")
        if o.detail:
            print(f"{'':<18} note: {o.detail}")
        for path in o.files:
            print(f"{'':<18} {path}")
    if not outcomes:
        print(f"no tenant has a contract or usage in {period}")
    return 1 if refused else 0


def issuer_of(path: Path | None) -> Issuer:
    if path is None:
        raise ConfigError(
            "statements name their issuer: pass --issuer FILE (or METER_ISSUER_FILE), the "
            "provider's legal name, address, tax id and number prefix, as in "
            "billing/issuer.example.json"
        )
    return load_issuer_file(path)


def drafts(
    settings: ClickHouseSettings,
    period: str,
    out: Path,
    tenant: str | None,
    issuer_file: Path | None,
) -> int:
    issuer = issuer_of(issuer_file)
    outcomes = draft_statements(Warehouse(settings), period, out, tenant, issuer=issuer)
    print(f"DRAFT statements of {period}: not issued, nothing recorded, no digest")
    for o in outcomes:
        if o.status == "refused":
            print(f"{o.tenant_id:<18} no draft: {o.detail}")
            continue
        print(f"{o.tenant_id:<18} DRAFT total {o.total:>18}")
        for path in o.files:
            print(f"{'':<18} {path}")
    return 0


def verify(path: Path) -> int:
    digest = verify_json_file(path.read_bytes())
    print(f"{path}: digest {digest} matches its content")
    return 0


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ConfigError(f"{what} {text!r} is not a number") from exc
    if value < 0:
        raise ConfigError(f"{what} must be ≥ 0")
    return value


def reconcile_period(
    settings: ClickHouseSettings,
    period: str,
    invoice: Path | None,
    tol_hours: str,
    tol_amount: str,
    recheck: bool = False,
) -> int:
    report = reconcile(
        Warehouse(settings),
        period,
        invoice,
        _decimal(tol_hours, "--tolerance-gpu-hours"),
        _decimal(tol_amount, "--tolerance-amount"),
        recheck,
    )
    print("\n".join(report.lines))
    return report.exit_code


def compact_period(settings: ClickHouseSettings, period_label: str, clock: Clock = utc_now) -> int:
    """``meter compact --period``: merge the closed month's partitions of every table
    reconciliation reads (warehouse/compaction.py), with a line per merge."""
    period = Period.parse(period_label)
    if period.end_us > epoch_us(clock()):
        raise BillingError(
            f"{period.label} is not over yet: compact a month once it is closed "
            "(late usage would only add parts again)"
        )
    warehouse = Warehouse(settings)
    partitions = partitions_read(period.start_us, period.end_us)
    merged = compact(warehouse, partitions, progress=print)
    left = not_compacted(warehouse, partitions)
    if left:  # written to while merging: run again once the writes stop
        raise BillingError(
            f"{period.label}: {', '.join(left)} took new parts while merging; "
            "run `meter compact` again"
        )
    print(
        f"{period.label}: {len(merged)} partitions merged; each table's month is one "
        "merged part, which `meter reconcile` compares in one pass"
    )
    return 0
