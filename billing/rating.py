"""Rating: metered usage × contract → statement lines, in ``Decimal``, no I/O.

The rules (also in ``billing/README.md``):

- usage: allocated GPU-µs per (contract, SKU, cluster, rate period) × rate per GPU-hour;
  a rate change splits the usage at the change (usage is in whole-minute windows and rate
  changes fall on whole minutes, so nothing straddles one);
- sla_credit: allocated-but-unhealthy GPU-µs × the same rate × the contract's multiplier,
  as a negative amount;
- energy (only with a pass-through rate): energy mJ per (SKU, cluster) × rate per kWh;
- commitment_true_up: when the usage amount of a contract in the month is below its
  minimum monthly commitment (prorated by the seconds of the month inside the term), the
  difference. Credits and energy do not count towards the commitment.

Each line's amount is rounded once, half up, to the currency's minor unit; totals are sums
of rounded lines, so every total can be re-added from the lines.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

from billing.contracts import Contract, format_instant
from billing.errors import BillingError
from core.units import MJ_PER_KWH, US_PER_DAY, US_PER_GPU_HOUR, epoch_us, utc_datetime

# Wide enough that no product of a 20-digit quantity and a 9-place rate is ever rounded.
_EXACT = Context(prec=80)
KINDS = ("usage", "energy", "commitment_true_up", "sla_credit")


@dataclass(frozen=True)
class Period:
    """A calendar month in UTC, [start_us, end_us)."""

    label: str
    start_us: int
    end_us: int

    @classmethod
    def parse(cls, label: str) -> Period:
        try:
            start = datetime.strptime(label, "%Y-%m").replace(tzinfo=UTC)
        except ValueError as exc:
            raise BillingError(f"period {label!r} must be a month written YYYY-MM") from exc
        if start.strftime("%Y-%m") != label:
            raise BillingError(f"period {label!r} must be a month written YYYY-MM")
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return cls(label, epoch_us(start), epoch_us(end))

    def next(self) -> Period:
        return Period.parse(utc_datetime(self.end_us).strftime("%Y-%m"))

    @property
    def days(self) -> list[str]:
        return [
            utc_datetime(day_us).strftime("%Y-%m-%d")
            for day_us in range(self.start_us, self.end_us, US_PER_DAY)
        ]


@dataclass(frozen=True)
class UsageRow:
    """Metered usage of one tenant in one window (or any finer grain)."""

    sku: str
    cluster: str
    window_start_us: int
    allocated_us: int
    unhealthy_us: int
    energy_mj: int


@dataclass(frozen=True)
class Line:
    kind: str  # one of KINDS
    for_period: str  # the period the usage belongs to (earlier than the statement's: adjustment)
    contract_id: str
    sku: str
    cluster: str
    rate_from_us: int  # 0 where the line has no rate period
    rate_to_us: int
    quantity: int  # in unit
    unit: str  # gpu_us, energy_mj or "" (true-up)
    rate: Decimal  # per GPU-hour, per kWh, or 0
    amount: Decimal  # rounded to the minor unit
    # The corrections (ids, comma-separated) whose effect this line bills; "" for metered
    # usage. Not part of the key: a line is matched with what was billed whatever made it.
    correction: str = ""

    @property
    def key(self) -> tuple[str, str, str, str, str, int]:
        return (
            self.for_period,
            self.kind,
            self.contract_id,
            self.sku,
            self.cluster,
            self.rate_from_us,
        )


def round_money(amount: Decimal, minor_units: int) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-minor_units), rounding=ROUND_HALF_UP)


def _priced(quantity: int, rate: Decimal, per: int, minor_units: int, sign: int = 1) -> Decimal:
    with localcontext(_EXACT):
        exact = Decimal(quantity) * rate / per
    return round_money(exact * sign, minor_units)


@dataclass(frozen=True)
class UnratedUsage:
    sku: str
    cluster: str
    window_start_us: int
    allocated_us: int

    @classmethod
    def of(cls, row: UsageRow) -> UnratedUsage:
        return cls(row.sku, row.cluster, row.window_start_us, row.allocated_us)

    def describe(self) -> str:
        return (
            f"{self.allocated_us} GPU-µs on {self.sku}/{self.cluster} in the window starting "
            f"{format_instant(self.window_start_us)} have no contract rate"
        )


def rate_period(
    contracts: list[Contract], period: Period, usage: Iterable[UsageRow]
) -> tuple[list[Line], list[UnratedUsage]]:
    """Lines for one tenant's usage in ``period`` under its contracts, plus what no rate covers."""
    rows = [u for u in usage if period.start_us <= u.window_start_us < period.end_us]
    lines: list[Line] = []
    unrated: list[UnratedUsage] = []
    claimed: set[int] = set()
    for contract in contracts:
        lines.extend(_rate_contract(contract, period, rows, claimed, unrated))
    for i, row in enumerate(rows):
        if i not in claimed and (row.allocated_us or row.unhealthy_us or row.energy_mj):
            unrated.append(UnratedUsage.of(row))
    return lines, unrated


def _rate_contract(
    contract: Contract,
    period: Period,
    rows: list[UsageRow],
    claimed: set[int],
    unrated: list[UnratedUsage],
) -> list[Line]:
    start, end = contract.covered(period.start_us, period.end_us)
    if start >= end:
        return []
    places = contract.minor_units
    alloc: dict[tuple[str, str, int], int] = defaultdict(int)
    unhealthy: dict[tuple[str, str, int], int] = defaultdict(int)
    energy: dict[tuple[str, str], int] = defaultdict(int)
    rates = {(r.sku, r.from_us): r for r in contract.rates}
    for i, row in enumerate(rows):
        if not start <= row.window_start_us < end:
            continue
        claimed.add(i)
        found = next(
            (
                r
                for r in contract.rates
                if r.sku == row.sku and r.from_us <= row.window_start_us < r.to_us
            ),
            None,
        )
        if found is None:
            unrated.append(UnratedUsage.of(row))
            continue
        alloc[(row.sku, row.cluster, found.from_us)] += row.allocated_us
        unhealthy[(row.sku, row.cluster, found.from_us)] += row.unhealthy_us
        energy[(row.sku, row.cluster)] += row.energy_mj

    def line(
        kind: str,
        sku: str,
        cluster: str,
        since: int,
        qty: int,
        unit: str,
        rate: Decimal,
        amount: Decimal,
    ) -> Line:
        # The rate period as it applies inside this month and term.
        shown_from = max(since, start) if since else 0
        shown_to = min(rates[(sku, since)].to_us, end) if since else 0
        return Line(
            kind,
            period.label,
            contract.contract_id,
            sku,
            cluster,
            shown_from,
            shown_to,
            qty,
            unit,
            rate,
            amount,
        )

    lines = []
    for (sku, cluster, since), qty in sorted(alloc.items()):
        rate = rates[(sku, since)].rate_per_gpu_hour
        lines.append(
            line(
                "usage",
                sku,
                cluster,
                since,
                qty,
                "gpu_us",
                rate,
                _priced(qty, rate, US_PER_GPU_HOUR, places),
            )
        )
    usage_total = sum((ln.amount for ln in lines), Decimal(0))
    if contract.energy_rate_per_kwh is not None:
        for (sku, cluster), mj in sorted(energy.items()):
            if not mj:
                continue
            rate = contract.energy_rate_per_kwh
            lines.append(
                line(
                    "energy",
                    sku,
                    cluster,
                    0,
                    mj,
                    "energy_mj",
                    rate,
                    _priced(mj, rate, MJ_PER_KWH, places),
                )
            )
    minimum = prorated_minimum(contract, start, end, period)
    if usage_total < minimum:
        lines.append(
            line("commitment_true_up", "", "", 0, 0, "", Decimal(0), minimum - usage_total)
        )
    if contract.sla_credit_multiplier:
        for (sku, cluster, since), qty in sorted(unhealthy.items()):
            if qty:
                rate = rates[(sku, since)].rate_per_gpu_hour * contract.sla_credit_multiplier
                lines.append(
                    line(
                        "sla_credit",
                        sku,
                        cluster,
                        since,
                        qty,
                        "gpu_us",
                        rate,
                        _priced(qty, rate, US_PER_GPU_HOUR, places, -1),
                    )
                )
    return lines


def prorated_minimum(contract: Contract, start_us: int, end_us: int, period: Period) -> Decimal:
    """The minimum commitment for the part [start_us, end_us) of the month the term covers."""
    covered = end_us - start_us
    whole = period.end_us - period.start_us
    with localcontext(_EXACT):
        exact = contract.minimum_monthly_commitment * covered / whole
    return round_money(exact, contract.minor_units)


def adjustment_lines(rerated: list[Line], billed: list[Line]) -> list[Line]:
    """What an earlier period's charges are now minus what statements already billed for it.

    Lines are matched by their key; a key on one side only counts as zero on the other.
    """
    before: dict[tuple[str, str, str, str, str, int], Line] = {}
    for ln in billed:
        prior = before.get(ln.key)
        before[ln.key] = (
            ln
            if prior is None
            else replace(
                prior, quantity=prior.quantity + ln.quantity, amount=prior.amount + ln.amount
            )
        )
    now = {ln.key: ln for ln in rerated}
    out = []
    for key in sorted(before.keys() | now.keys()):
        new, old = now.get(key), before.get(key)
        template = new or old
        assert template is not None
        dq = (new.quantity if new else 0) - (old.quantity if old else 0)
        da = (new.amount if new else Decimal(0)) - (old.amount if old else Decimal(0))
        if dq or da:
            out.append(replace(template, quantity=dq, amount=da))
    return out
