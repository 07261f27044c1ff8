"""Contracts: what a tenant pays for allocated GPU time, parsed and validated once.

The file format is JSON (documented in ``billing/README.md``; an example is
``billing/contracts.example.json``). Money and rates are decimal strings (JSON numbers are
accepted and read exactly, never through a float). Every refusal names the contract and
the field, e.g. ``contract 'AUR-2026' rates[1].effective_from: ...``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from billing.errors import ContractError
from core.identity import UNALLOCATED, ReportLimits, is_known_sku, is_valid_tenant
from core.units import US_PER_DAY, US_PER_MINUTE, epoch_us, utc_datetime

# ISO 4217 minor units of the currencies we invoice in. Rounding is to this many places.
CURRENCY_MINOR_UNITS = {"USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "SGD": 2, "JPY": 0}
# The warehouse stores money as Decimal(38, 9): more places would be cut off there.
MAX_PLACES = 9
MAX_AMOUNT = Decimal(10) ** 15
MAX_TERMS_DAYS = 365
T = TypeVar("T")


@dataclass(frozen=True, order=True)
class RatePeriod:
    """One SKU's rate per allocated GPU-hour over [from_us, to_us)."""

    sku: str
    from_us: int
    to_us: int
    rate_per_gpu_hour: Decimal


@dataclass(frozen=True)
class Tax:
    """A tax charged on a contract's statement lines: ``rate`` (0.2 for 20 %) of their
    subtotal, rounded once, as every amount is."""

    label: str
    rate: Decimal


@dataclass(frozen=True)
class Contract:
    contract_id: str
    tenant_id: str
    currency: str
    term_start_us: int
    term_end_us: int  # exclusive
    committed_gpus: int
    minimum_monthly_commitment: Decimal
    energy_rate_per_kwh: Decimal | None  # None: no energy pass-through
    sla_credit_multiplier: Decimal
    rates: tuple[RatePeriod, ...]  # sorted by (sku, from_us); contiguous per SKU
    payment_terms_days: int  # due date = issue date + this; -1: not recorded (loaded earlier)
    tax: Tax | None  # None: the contract says no tax is charged

    @property
    def minor_units(self) -> int:
        return CURRENCY_MINOR_UNITS[self.currency]

    def overlaps(self, start_us: int, end_us: int) -> bool:
        return self.term_start_us < end_us and start_us < self.term_end_us

    def covered(self, start_us: int, end_us: int) -> tuple[int, int]:
        """The part of [start_us, end_us) inside the term (empty when start ≥ end)."""
        return max(start_us, self.term_start_us), min(end_us, self.term_end_us)


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str


@dataclass(frozen=True)
class ContractBook:
    tenants: tuple[Tenant, ...]
    contracts: tuple[Contract, ...]

    def tenant(self, tenant_id: str) -> Tenant | None:
        return next((t for t in self.tenants if t.tenant_id == tenant_id), None)

    def contracts_of(self, tenant_id: str, start_us: int, end_us: int) -> list[Contract]:
        mine = [c for c in self.contracts if c.tenant_id == tenant_id]
        return sorted(
            (c for c in mine if c.overlaps(start_us, end_us)), key=lambda c: c.term_start_us
        )


def parse_instant(text: Any, where: str) -> int:
    """``2026-10-01`` (midnight UTC) or ISO 8601 with an explicit UTC offset → epoch µs."""
    if not isinstance(text, str):
        raise ContractError(f"{where}: expected a date or UTC timestamp string, got {text!r}")
    try:
        if len(text) == 10:
            moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ContractError(f"{where}: {text!r} is not an ISO 8601 date or timestamp") from exc
    if moment.tzinfo is None:
        raise ContractError(f"{where}: {text!r} has no UTC offset; write e.g. {text}Z")
    micros = epoch_us(moment)
    if micros % US_PER_MINUTE:
        # Usage is metered in whole-minute windows: a change inside one cannot be split.
        raise ContractError(f"{where}: {text!r} must fall on a whole minute")
    return micros


def format_instant(micros: int) -> str:
    return utc_datetime(micros).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_money(value: Any, where: str, places: int = MAX_PLACES) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ContractError(f'{where}: expected a decimal string such as "2.45", got {value!r}')
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise ContractError(f"{where}: {value!r} is not a decimal number") from exc
    if not amount.is_finite() or amount < 0:
        raise ContractError(f"{where}: {value!r} must be a finite amount ≥ 0")
    if amount >= MAX_AMOUNT:
        raise ContractError(f"{where}: {value!r} is implausibly large (≥ {MAX_AMOUNT:,})")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise ContractError(f"{where}: {value!r} has more than {places} decimal places")
    return amount


def _object(value: Any, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ContractError(f"{where}: expected an object, got {type(value).__name__}")
    missing = sorted(required - value.keys())
    if missing:
        raise ContractError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(value.keys() - required - optional)
    if unknown:
        raise ContractError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return value


def _tenant_id(value: Any, where: str, limits: ReportLimits) -> str:
    if not isinstance(value, str) or not is_valid_tenant(value, limits) or value == UNALLOCATED:
        raise ContractError(f"{where}: {value!r} is not a billable tenant id")
    return value


def _parse_rates(raw: Any, where: str, start_us: int, end_us: int) -> tuple[RatePeriod, ...]:
    if not isinstance(raw, list) or not raw:
        raise ContractError(f"{where}: rates must be a non-empty list")
    limits = ReportLimits()
    by_sku: dict[str, list[tuple[int, Decimal]]] = {}
    for i, item in enumerate(raw):
        at = f"{where} rates[{i}]"
        entry = _object(item, at, {"sku", "rate_per_gpu_hour"}, {"effective_from"})
        sku = entry["sku"]
        if not isinstance(sku, str) or not is_known_sku(sku, limits):
            raise ContractError(f"{at}.sku: {sku!r} is not a known SKU")
        rate = parse_money(entry["rate_per_gpu_hour"], f"{at}.rate_per_gpu_hour")
        since = start_us
        if "effective_from" in entry:
            since = parse_instant(entry["effective_from"], f"{at}.effective_from")
        if not start_us <= since < end_us:
            raise ContractError(f"{at}.effective_from: outside the contract term")
        changes = by_sku.setdefault(sku, [])
        if any(since == other for other, _ in changes):
            raise ContractError(f"{at}: a second rate for {sku} from {format_instant(since)}")
        changes.append((since, rate))
    periods = []
    for sku, changes in sorted(by_sku.items()):
        changes.sort()
        for j, (since, rate) in enumerate(changes):
            until = changes[j + 1][0] if j + 1 < len(changes) else end_us
            periods.append(RatePeriod(sku, since, until, rate))
    return tuple(periods)


def _parse_contract(raw: Any, i: int, tenants: set[str]) -> Contract:
    where = f"contracts[{i}]"
    fields = {
        "contract_id",
        "tenant_id",
        "currency",
        "term",
        "rates",
        "committed_gpus",
        "minimum_monthly_commitment",
    }
    fields.add("payment_terms_days")
    entry = _object(raw, where, fields, {"energy_rate_per_kwh", "sla_credit_multiplier", "tax"})
    cid = entry["contract_id"]
    if not isinstance(cid, str) or not cid or len(cid) > 64 or not cid.isprintable():
        raise ContractError(f"{where}.contract_id: {cid!r} must be 1–64 printable characters")
    where = f"contract {cid!r}"
    tenant = _tenant_id(entry["tenant_id"], f"{where} tenant_id", ReportLimits())
    if tenant not in tenants:
        raise ContractError(f"{where} tenant_id: {tenant!r} is not listed under tenants")
    currency = entry["currency"]
    if currency not in CURRENCY_MINOR_UNITS:
        raise ContractError(
            f"{where} currency: {currency!r} is not one of "
            + ", ".join(sorted(CURRENCY_MINOR_UNITS))
        )
    term = _object(entry["term"], f"{where} term", {"start", "end"}, set())
    start_us = parse_instant(term["start"], f"{where} term.start")
    end_us = parse_instant(term["end"], f"{where} term.end")
    for name, at_us in (("start", start_us), ("end", end_us)):
        if at_us % US_PER_DAY:
            # Positions against the commitment read the day rollups (docs/FINANCE.md).
            raise ContractError(
                f"{where} term.{name}: {term[name]!r} must be a whole UTC day (midnight), "
                "e.g. 2026-10-01"
            )
    if end_us <= start_us:
        raise ContractError(f"{where} term: end {term['end']} is not after start {term['start']}")
    gpus = entry["committed_gpus"]
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= 10_000_000:
        raise ContractError(f"{where} committed_gpus: {gpus!r} must be a whole number ≥ 0")
    places = CURRENCY_MINOR_UNITS[currency]
    minimum = parse_money(
        entry["minimum_monthly_commitment"], f"{where} minimum_monthly_commitment", places
    )
    energy = None
    if entry.get("energy_rate_per_kwh") is not None:
        energy = parse_money(entry["energy_rate_per_kwh"], f"{where} energy_rate_per_kwh")
    multiplier = parse_money(
        entry.get("sla_credit_multiplier", "1"), f"{where} sla_credit_multiplier"
    )
    if multiplier > 10:
        raise ContractError(f"{where} sla_credit_multiplier: {multiplier} is above 10")
    rates = _parse_rates(entry["rates"], where, start_us, end_us)
    terms = entry["payment_terms_days"]
    if isinstance(terms, bool) or not isinstance(terms, int) or not 0 <= terms <= MAX_TERMS_DAYS:
        raise ContractError(
            f"{where} payment_terms_days: {terms!r} must be a whole number of "
            f"days from 0 to {MAX_TERMS_DAYS}"
        )
    tax = _parse_tax(entry["tax"], f"{where} tax") if "tax" in entry else None
    return Contract(
        cid,
        tenant,
        currency,
        start_us,
        end_us,
        gpus,
        minimum,
        energy,
        multiplier,
        rates,
        terms,
        tax,
    )


def _parse_tax(raw: Any, where: str) -> Tax:
    entry = _object(raw, where, {"label", "rate"}, set())
    label = entry["label"]
    if not isinstance(label, str) or not label.strip() or len(label) > 64:
        raise ContractError(f'{where}.label: must be 1–64 characters, e.g. "VAT 20%"')
    rate = parse_money(entry["rate"], f"{where}.rate")
    if rate >= 1:
        raise ContractError(
            f'{where}.rate: {entry["rate"]!r} is a fraction below 1 ("0.20" for 20 %)'
        )
    return Tax(label.strip(), rate)


def parse_contract_book(document: Any) -> ContractBook:
    top = _object(document, "contracts file", {"tenants", "contracts"}, set())
    if not isinstance(top["tenants"], list) or not isinstance(top["contracts"], list):
        raise ContractError("contracts file: tenants and contracts must be lists")
    tenants: list[Tenant] = []
    for i, raw in enumerate(top["tenants"]):
        entry = _object(raw, f"tenants[{i}]", {"tenant_id", "name"}, set())
        tid = _tenant_id(entry["tenant_id"], f"tenants[{i}].tenant_id", ReportLimits())
        name = entry["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ContractError(f"tenants[{i}].name: must be 1–200 characters")
        if any(t.tenant_id == tid for t in tenants):
            raise ContractError(f"tenants[{i}]: tenant {tid!r} is listed twice")
        tenants.append(Tenant(tid, name.strip()))
    known = {t.tenant_id for t in tenants}
    contracts = [_parse_contract(raw, i, known) for i, raw in enumerate(top["contracts"])]
    seen: dict[str, Contract] = {}
    for c in contracts:
        if c.contract_id in seen:
            raise ContractError(f"contract {c.contract_id!r} is listed twice")
        for other in seen.values():
            if other.tenant_id == c.tenant_id and other.overlaps(c.term_start_us, c.term_end_us):
                raise ContractError(
                    f"contract {c.contract_id!r}: its term overlaps contract "
                    f"{other.contract_id!r} of the same tenant {c.tenant_id!r}"
                )
        seen[c.contract_id] = c
    return ContractBook(tuple(tenants), tuple(contracts))


def load_json_file(path: Path, what: str, parse: Callable[[Any], T]) -> T:
    """``parse`` of the JSON file at ``path`` (numbers read as Decimal, never a float);
    every refusal names the file: ``what`` says which kind it is."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ContractError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return parse(document)
    except ContractError as exc:
        raise ContractError(f"{path}: {exc}") from exc


def load_contract_file(path: Path) -> ContractBook:
    return load_json_file(path, "contracts file", parse_contract_book)
