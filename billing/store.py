"""The warehouse side of billing: contracts in, usage and issued statements out.

Every query filters by one tenant where it reads usage, so a statement is built from that
tenant's rows only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from billing.contracts import Contract, ContractBook, RatePeriod, Tax, Tenant, parse_instant
from billing.rating import Period, UsageRow, rate_period
from billing.statement import canonical_bytes
from core.identity import UNALLOCATED
from core.units import US_PER_DAY, US_PER_SECOND, epoch_us, utc_datetime
from warehouse.client import Warehouse
from warehouse.totals import grain_rows_sql

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def store_contracts(
    warehouse: Warehouse, book: ContractBook, source_sha256: str, clock: Clock = utc_now
) -> int:
    """Record a validated contract book as one new load; returns its load id."""
    rows = warehouse.execute("SELECT max(load_id) FROM contracts")
    load_id = int(rows[0][0] or 0) + 1
    now = clock().replace(microsecond=0)
    warehouse.insert(
        "tenants",
        ("tenant_id", "name", "load_id", "loaded_at"),
        [(t.tenant_id, t.name, load_id, now) for t in book.tenants],
    )
    warehouse.insert(
        "contracts",
        (
            "contract_id",
            "tenant_id",
            "currency",
            "term_start",
            "term_end",
            "committed_gpus",
            "minimum_monthly_commitment",
            "energy_pass_through",
            "energy_rate_per_kwh",
            "sla_credit_multiplier",
            "payment_terms_days",
            "has_tax",
            "tax_label",
            "tax_rate",
            "source_sha256",
            "load_id",
            "loaded_at",
        ),
        [
            (
                c.contract_id,
                c.tenant_id,
                c.currency,
                utc_datetime(c.term_start_us),
                utc_datetime(c.term_end_us),
                c.committed_gpus,
                c.minimum_monthly_commitment,
                int(c.energy_rate_per_kwh is not None),
                c.energy_rate_per_kwh or Decimal(0),
                c.sla_credit_multiplier,
                c.payment_terms_days,
                int(c.tax is not None),
                c.tax.label if c.tax else "",
                c.tax.rate if c.tax else Decimal(0),
                source_sha256,
                load_id,
                now,
            )
            for c in book.contracts
        ],
    )
    warehouse.insert(
        "contract_rates",
        (
            "contract_id",
            "tenant_id",
            "sku",
            "effective_from",
            "effective_to",
            "rate_per_gpu_hour",
            "load_id",
        ),
        [
            (
                c.contract_id,
                c.tenant_id,
                r.sku,
                utc_datetime(r.from_us),
                utc_datetime(r.to_us),
                r.rate_per_gpu_hour,
                load_id,
            )
            for c in book.contracts
            for r in c.rates
        ],
    )
    return load_id


def read_contract_book(warehouse: Warehouse) -> ContractBook:
    tenants = tuple(
        Tenant(tid, name)
        for tid, name in warehouse.execute(
            "SELECT tenant_id, name FROM tenants_current ORDER BY tenant_id"
        )
    )
    rates: dict[str, list[RatePeriod]] = {}
    for cid, sku, since, until, rate in warehouse.execute(
        "SELECT contract_id, sku, effective_from, effective_to, rate_per_gpu_hour "
        "FROM contract_rates_current ORDER BY contract_id, sku, effective_from"
    ):
        rates.setdefault(cid, []).append(
            RatePeriod(sku, epoch_us(since), epoch_us(until), Decimal(rate))
        )
    contracts = tuple(
        Contract(
            cid,
            tid,
            cur,
            epoch_us(start),
            epoch_us(end),
            int(gpus),
            Decimal(minimum),
            Decimal(energy) if has_energy else None,
            Decimal(mult),
            tuple(rates.get(cid, ())),
            int(terms),
            Tax(label, Decimal(tax_rate)) if has_tax else None,
        )
        for (
            cid,
            tid,
            cur,
            start,
            end,
            gpus,
            minimum,
            has_energy,
            energy,
            mult,
            terms,
            has_tax,
            label,
            tax_rate,
        ) in warehouse.execute(
            "SELECT contract_id, tenant_id, currency, term_start, term_end, committed_gpus, "
            "minimum_monthly_commitment, energy_pass_through, energy_rate_per_kwh, "
            "sla_credit_multiplier, payment_terms_days, has_tax, tax_label, tax_rate "
            "FROM contracts_current ORDER BY contract_id"
        )
    )
    return ContractBook(tenants, contracts)


def _day_params(period: Period, **extra: Any) -> dict[str, Any]:
    """The period's first day and the day after its last, for a WHERE on a ``day`` column."""
    first, end = utc_datetime(period.start_us).date(), utc_datetime(period.end_us).date()
    return {"first": first, "end": end, **extra}


def _day_rows(warehouse: Warehouse, tenant_id: str, start_us: int, end_us: int) -> list[UsageRow]:
    """The tenant's day rollups of the days in [start_us, end_us)."""
    days = grain_rows_sql("day", "tenant_id = %(tenant)s AND day >= %(first)s AND day < %(end)s")
    rows = warehouse.execute(
        "SELECT sku, cluster, toUInt32(toDateTime(day)), allocated_us, unhealthy_us, energy_mj "
        f"FROM ({days}) AS days",
        {
            "tenant": tenant_id,
            "first": utc_datetime(start_us).date(),
            "end": utc_datetime(end_us).date(),
        },
    )
    return [
        UsageRow(sku, cluster, int(d) * US_PER_SECOND, int(a), int(u), int(e))
        for sku, cluster, d, a, u, e in rows
    ]


def _minute_rows(warehouse: Warehouse, tenant_id: str, day_us: int) -> list[UsageRow]:
    """The tenant's minute rollups of the UTC day at ``day_us``."""
    minutes = grain_rows_sql(
        "minute", "tenant_id = %(tenant)s AND window_start >= %(start)s AND window_start < %(end)s"
    )
    rows = warehouse.execute(
        "SELECT sku, cluster, toUInt32(window_start), allocated_us, unhealthy_us, energy_mj "
        f"FROM ({minutes}) AS minutes",
        {
            "tenant": tenant_id,
            "start": utc_datetime(day_us),
            "end": utc_datetime(day_us + US_PER_DAY),
        },
    )
    return [
        UsageRow(sku, cluster, int(w) * US_PER_SECOND, int(a), int(u), int(e))
        for sku, cluster, w, a, u, e in rows
    ]


def _finer(
    warehouse: Warehouse, tenant_id: str, day_rows: list[UsageRow], fine: Iterable[int]
) -> list[UsageRow]:
    """``day_rows`` with the days ``fine`` (midnights) read per minute instead."""
    fine = set(fine)
    rows = [r for r in day_rows if r.window_start_us - r.window_start_us % US_PER_DAY not in fine]
    for day_us in sorted(fine):
        rows.extend(_minute_rows(warehouse, tenant_id, day_us))
    return sorted(rows, key=lambda r: (r.sku, r.cluster, r.window_start_us))


def read_usage(
    warehouse: Warehouse, tenant_id: str, period: Period, fine_days_us: Iterable[int] = ()
) -> list[UsageRow]:
    """The tenant's usage in ``period``: a row per (SKU, cluster, day) from the day
    rollups, except on ``fine_days_us`` (midnights), read per minute.

    Rating needs a row to lie inside one rate period and one term. Terms run in whole days;
    a rate may change on any minute, so the days where one does are read per minute
    (:func:`days_to_split`). A month is then a few thousand rows whatever the fleet, and
    reading it never touches another month or another tenant (the WHERE is on the tables).
    """
    fine = {d for d in fine_days_us if period.start_us <= d < period.end_us}
    days = _day_rows(warehouse, tenant_id, period.start_us, period.end_us)
    return _finer(warehouse, tenant_id, days, fine)


def days_to_split(contracts: Iterable[Contract], period: Period) -> set[int]:
    """The days of ``period`` (midnights, µs) inside which a contract's rate changes."""
    instants = {t for c in contracts for r in c.rates for t in (r.from_us, r.to_us)}
    return {
        t - t % US_PER_DAY
        for t in instants
        if period.start_us <= t < period.end_us and t % US_PER_DAY
    }


def read_usage_to_rate(
    warehouse: Warehouse, book: ContractBook, tenant_id: str, period: Period
) -> list[UsageRow]:
    """The tenant's usage in ``period`` as fine as rating it needs: per minute on the days
    a rate changes, and on the days with usage no contract rate covers, so a refusal or a
    finding names the very windows; per day everywhere else."""
    return read_periods_to_rate(warehouse, book, tenant_id, [period])[period.label]


def read_periods_to_rate(
    warehouse: Warehouse, book: ContractBook, tenant_id: str, periods: Sequence[Period]
) -> dict[str, list[UsageRow]]:
    """:func:`read_usage_to_rate` of each of ``periods``, their day rollups read in one
    query: re-rating every earlier month of a tenant costs one read, not one a month."""
    if not periods:
        return {}
    start_us = min(p.start_us for p in periods)
    end_us = max(p.end_us for p in periods)
    days = _day_rows(warehouse, tenant_id, start_us, end_us)
    out: dict[str, list[UsageRow]] = {}
    for period in periods:
        mine = [r for r in days if period.start_us <= r.window_start_us < period.end_us]
        contracts = book.contracts_of(tenant_id, period.start_us, period.end_us)
        fine = days_to_split(contracts, period)
        usage = _finer(warehouse, tenant_id, mine, fine)
        unrated = rate_period(contracts, period, usage)[1]
        unrated_days = {u.window_start_us - u.window_start_us % US_PER_DAY for u in unrated}
        if unrated_days - fine:
            usage = _finer(warehouse, tenant_id, mine, fine | unrated_days)
        out[period.label] = usage
    return out


def tenants_of_period(warehouse: Warehouse, book: ContractBook, period: Period) -> list[str]:
    """Every tenant with a contract in force or metered usage in ``period``."""
    with_contract = {
        c.tenant_id for c in book.contracts if c.overlaps(period.start_us, period.end_us)
    }
    return sorted(with_contract | set(tenants_with_usage(warehouse, period)))


def tenants_with_usage(warehouse: Warehouse, period: Period) -> list[str]:
    rows = warehouse.execute(
        "SELECT DISTINCT tenant_id FROM (SELECT tenant_id FROM usage_by_day "
        "WHERE day >= %(first)s AND day < %(end)s AND tenant_id != %(idle)s UNION ALL "
        "SELECT tenant_id FROM usage_corrections WHERE day >= %(first)s AND day < %(end)s "
        "AND allocated_us > 0) AS tenants",
        _day_params(period, idle=UNALLOCATED),
    )
    return sorted(r[0] for r in rows)


def windows_closed_before(warehouse: Warehouse) -> int | None:
    """The instant (µs) before which every partition of the pipeline has closed its
    windows, from ``pipeline_progress``; None when nothing was ever metered."""
    rows = warehouse.execute(
        "SELECT count(), min(toUInt64(windows_closed_before)) FROM pipeline_progress"
    )
    partitions, closed_s = rows[0]
    return None if not partitions else int(closed_s) * US_PER_SECOND


def months_with_usage(warehouse: Warehouse, tenant_id: str, before: Period) -> list[str]:
    """Every month (YYYY-MM) before ``before`` in which ``tenant_id`` has metered usage or
    usage from a correction."""
    rows = warehouse.execute(
        "SELECT DISTINCT m FROM (SELECT toYYYYMM(month) AS m FROM usage_by_month_exact "
        "WHERE tenant_id = %(tenant)s AND month < %(first)s UNION ALL "
        "SELECT toYYYYMM(day) AS m FROM usage_corrections "
        "WHERE tenant_id = %(tenant)s AND day < %(first)s) AS months",
        {"tenant": tenant_id, "first": utc_datetime(before.start_us).date()},
    )
    return sorted(f"{int(m) // 100:04d}-{int(m) % 100:02d}" for (m,) in rows)


def issued_statements(warehouse: Warehouse, tenant_id: str) -> dict[str, tuple[str, str]]:
    """period → (canonical statement JSON, digest) of every statement issued to a tenant.

    Should two operators have issued one concurrently, the first one issued is the one.
    """
    rows = warehouse.execute(
        "SELECT period, argMin(canonical_json, issued_at), argMin(digest_sha256, issued_at) "
        "FROM statements WHERE tenant_id = %(tenant)s GROUP BY period",
        {"tenant": tenant_id},
    )
    return {period: (text, digest) for period, text, digest in rows}


def month_rollups(
    warehouse: Warehouse, tenant_id: str, through: Period
) -> dict[str, list[tuple[Any, ...]]]:
    """month (YYYY-MM) → the tenant's month rollup rows (SKU, cluster, then the counters,
    sorted) of every month up to and including ``through``: the fingerprint of what rating
    a month reads (billing/issue.py). A few rows a month, whatever the fleet."""
    months = grain_rows_sql("month", "tenant_id = %(tenant)s AND month < %(end)s")
    rows = warehouse.execute(
        "SELECT toYYYYMM(month), sku, cluster, allocated_us, busy_us, unhealthy_us, energy_mj, "
        f"sample_count FROM ({months}) AS months",
        {"tenant": tenant_id, "end": utc_datetime(through.end_us).date()},
    )
    out: dict[str, list[tuple[Any, ...]]] = {}
    for month, *row in sorted(rows):
        out.setdefault(f"{int(month) // 100:04d}-{int(month) % 100:02d}", []).append(tuple(row))
    return out


@dataclass(frozen=True)
class Rated:
    """What a statement rated a month from: the fingerprint of its inputs, and the
    corrections among them."""

    sha256: str
    correction_ids: frozenset[str]


NOT_RATED = Rated("", frozenset())


def rated_inputs(
    warehouse: Warehouse, tenant_id: str, statement_ids: Iterable[str]
) -> dict[str, Rated]:
    """month → the input fingerprint it was last rated from, by the latest of the
    statements ``statement_ids`` of the tenant that rated it (a statement counts once its
    row is written: the mark of issue). Latest by issue time, then by number (assigned in
    order of issue)."""
    wanted = set(statement_ids)
    rows = warehouse.execute(
        "SELECT r.for_period, r.inputs_sha256, s.issued_at, s.statement_number, r.statement_id, "
        "r.correction_ids "
        "FROM rated_inputs AS r INNER JOIN (SELECT statement_id, issued_at, statement_number "
        "FROM statements WHERE tenant_id = %(tenant)s) AS s USING statement_id "
        "WHERE r.tenant_id = %(tenant)s",
        {"tenant": tenant_id},
    )
    latest: dict[str, tuple[Any, str, Rated]] = {}
    for period, sha, issued_at, number, sid, ids in rows:
        if sid not in wanted:
            continue
        if period not in latest or (issued_at, number) > latest[period][:2]:
            latest[period] = (issued_at, number, Rated(sha, frozenset(ids)))
    return {period: rated for period, (_, _, rated) in latest.items()}


def next_statement_sequence(warehouse: Warehouse, prefix: str) -> int:
    """The sequence number the next statement of numbers starting with ``prefix`` gets:
    one past the highest issued (numbers are assigned by one issuing process at a time)."""
    rows = warehouse.execute(
        "SELECT max(toUInt64OrZero(substring(statement_number, %(n)s))) FROM statements "
        "WHERE startsWith(statement_number, %(prefix)s)",
        {"prefix": prefix, "n": len(prefix) + 1},
    )
    return int(rows[0][0] or 0) + 1


def record_statement(
    warehouse: Warehouse,
    statement: dict[str, Any],
    digest_sha256: str,
    clock: Clock = utc_now,
    inputs: dict[str, Rated] | None = None,
) -> None:
    """Write an issued statement: its lines and ``inputs`` (month → the fingerprint of
    what it rated for that month) first, the statement row last."""
    tenant = statement["tenant"]["tenant_id"]
    period = statement["period"]["label"]
    sid = statement["statement_id"]
    now = clock().replace(microsecond=0)
    if inputs:
        warehouse.insert(
            "rated_inputs",
            (
                "tenant_id",
                "for_period",
                "statement_id",
                "inputs_sha256",
                "correction_ids",
                "recorded_at",
            ),
            [
                (tenant, month, sid, r.sha256, sorted(r.correction_ids), now)
                for month, r in sorted(inputs.items())
            ],
        )
    # Lines first: a statement row is the mark of issue, written only once its lines are in.
    warehouse.insert(
        "statement_lines",
        (
            "tenant_id",
            "period",
            "statement_id",
            "line_no",
            "kind",
            "for_period",
            "contract_id",
            "sku",
            "cluster",
            "rate_from",
            "quantity",
            "unit",
            "rate",
            "amount",
        ),
        [
            (
                tenant,
                period,
                sid,
                ln["line_no"],
                ln["kind"],
                ln["for_period"],
                ln["contract_id"],
                ln["sku"],
                ln["cluster"],
                _rate_from(ln),
                ln["quantity"],
                ln["unit"],
                Decimal(ln["rate"] or 0),
                Decimal(ln["amount"]),
            )
            for ln in statement["lines"]
        ],
    )
    warehouse.insert(
        "statements",
        (
            "tenant_id",
            "period",
            "statement_id",
            "statement_number",
            "currency",
            "total",
            "digest_sha256",
            "canonical_json",
            "issued_at",
        ),
        [
            (
                tenant,
                period,
                sid,
                statement.get("statement_number", ""),
                statement["currency"],
                Decimal(statement["totals"]["total"]),
                digest_sha256,
                canonical_bytes(statement).decode(),
                now,
            )
        ],
    )


def _rate_from(line: dict[str, Any]) -> datetime:
    text = line["rate_from"]
    return utc_datetime(parse_instant(text, "rate_from") if text else 0)


def parse_statement(canonical: str) -> dict[str, Any]:
    return json.loads(canonical)
