"""``meter statements``: rate a closed month per tenant, issue each statement once, write files.

For each tenant the statement holds this period's lines and, for every earlier period
already billed to that tenant, an adjustment: that period re-rated on today's data minus
everything statements have billed for it so far. Usage that arrives after a period was
issued therefore appears, exactly once, on the next statement.

No month is left unbilled: an earlier month that was never issued is billed whole on this
statement, as prior-period lines labelled with that month, when the tenant has usage in it
or when a contract was in force in it after the tenant's first statement (its minimum is
owed). From then on it counts as billed, and issuing it on its own is refused.

Re-rating every earlier month would make issuing grow with the months issued, so each
issued statement records, per month it rated, a fingerprint of that month's inputs: the
tenant's month rollups, its corrections and the contracts in force (``rated_inputs``). A month whose
fingerprint is unchanged since it was last rated has nothing to adjust and is not read
again. The month rollups are read before the usage they stand for, so a change landing in
between makes the recorded fingerprint older than what was rated, never newer: the month
is then re-rated next time, which finds nothing new or the change.

An issued statement is never changed. Running again for an issued period re-renders its
files from the canonical JSON stored at issue, byte for byte, and says whether the data
has moved since (the difference then waits for the next statement).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from billing.contracts import ContractBook, Tenant, format_instant
from billing.correction_store import correction_rows, corrections_billed
from billing.errors import BillingError
from billing.issuer import Issuer
from billing.rating import Line, Period, UsageRow, adjustment_lines, rate_period
from billing.render import render_csv, render_html
from billing.statement import (
    Heading,
    StatementInput,
    build_statement,
    digest,
    draft_file_bytes,
    is_draft,
    json_file_bytes,
    lines_of,
    mark_draft,
)
from billing.store import (
    NOT_RATED,
    Clock,
    Rated,
    issued_statements,
    month_rollups,
    months_with_usage,
    next_statement_sequence,
    parse_statement,
    rated_inputs,
    read_contract_book,
    read_periods_to_rate,
    read_usage_to_rate,
    record_statement,
    tenants_of_period,
    utc_now,
    windows_closed_before,
)
from core.units import epoch_us
from warehouse.client import Warehouse


@dataclass(frozen=True)
class Outcome:
    tenant_id: str
    # issued | already issued | already issued, data changed | refused | would issue
    status: str
    detail: str = ""
    digest_sha256: str = ""
    total: str = ""
    files: tuple[Path, ...] = ()


def _rate(book: ContractBook, tenant_id: str, period: Period, usage: Any) -> list[Line]:
    contracts = book.contracts_of(tenant_id, period.start_us, period.end_us)
    lines, unrated = rate_period(contracts, period, usage)
    if unrated:
        first = "; ".join(u.describe() for u in unrated[:3])
        more = f" (and {len(unrated) - 3} more windows)" if len(unrated) > 3 else ""
        what = "usage without a contract rate" if contracts else "no contract, but usage"
        raise BillingError(f"tenant {tenant_id!r} {period.label}: {what}: {first}{more}")
    return lines


def compose(
    warehouse: Warehouse,
    book: ContractBook,
    tenant: Tenant,
    period: Period,
    issued: dict[str, tuple[str, str]],
    heading: Heading | None = None,
) -> dict[str, Any]:
    """The statement document for ``tenant`` and ``period`` from the warehouse as it is now
    (without ``heading``: its charges only, to compare with an issued one's)."""
    return _compose(warehouse, book, tenant, period, issued, heading).statement


# Part of every fingerprint: a change to the rating rules makes every month be re-rated.
RATING_RULES = "rating 1"


def inputs_sha256(
    book: ContractBook,
    tenant_id: str,
    period: Period,
    month_rows: Sequence[tuple[Any, ...]],
    correction_ids: Iterable[str] = (),
) -> str:
    """The fingerprint of what rating ``period`` for the tenant reads: its month rollups,
    the corrections of its usage (a correction is never changed, so its id stands for its
    usage) and the contracts in force in it. Metered usage of a closed month only grows
    (late usage is added, never taken away), so equal month sums mean the same day and
    minute rows."""
    contracts = book.contracts_of(tenant_id, period.start_us, period.end_us)
    doc = {
        "rules": RATING_RULES,
        "usage": [[str(v) for v in row] for row in month_rows],
        "corrections": sorted(correction_ids),
        "contracts": [repr(c) for c in contracts],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Composed:
    statement: dict[str, Any]
    usage: list[UsageRow]  # the period's, as rated (corrections included)
    # month → (fingerprint, the corrections rated), for every month this statement rated
    inputs: dict[str, Rated]


def _with(usage: list[UsageRow], corrections: dict[str, list[UsageRow]], ids: Iterable[str]):
    return usage + [row for cid in sorted(ids) for row in corrections.get(cid, ())]


def _correction_lines(
    book: ContractBook,
    tid: str,
    period: Period,
    base: list[UsageRow],
    base_lines: list[Line],
    corrections: dict[str, list[UsageRow]],
    ids: set[str],
) -> list[Line]:
    """What the corrections ``ids`` change in the period's charges, on top of ``base``
    (rated as ``base_lines``), each line labelled with the corrections it bills."""
    if not ids:
        return []
    corrected = _rate(book, tid, period, _with(base, corrections, ids))
    label = ",".join(sorted(ids))
    return [replace(ln, correction=label) for ln in adjustment_lines(corrected, base_lines)]


def _compose(
    warehouse: Warehouse,
    book: ContractBook,
    tenant: Tenant,
    period: Period,
    issued: dict[str, tuple[str, str]],
    heading: Heading | None,
) -> Composed:
    """:func:`compose`, with the period's usage it read and the inputs it rated.

    Corrections are billed apart from metered usage, as lines labelled with their ids:
    this period's on top of its metered charges, and an earlier month's as an adjustment
    once, on the first statement composed after the correction was added."""
    tid = tenant.tenant_id
    contracts = book.contracts_of(tid, period.start_us, period.end_us)
    month_rows = month_rollups(warehouse, tid, period)  # before the usage: see above
    metered = read_usage_to_rate(warehouse, book, tid, period)
    lines = _rate(book, tid, period, metered)  # names the windows no contract covers
    if not contracts:
        raise BillingError(
            f"tenant {tenant.tenant_id!r} has no contract and no usage in {period.label}"
        )
    billed: dict[str, list[Line]] = {}
    for text, _ in issued.values():
        for line in lines_of(parse_statement(text)):
            billed.setdefault(line.for_period, []).append(line)
    earlier_periods = unbilled_months(warehouse, book, tid, period, issued, billed)
    earlier_periods |= {p for p in (*issued, *billed) if p < period.label}
    labels = sorted({*earlier_periods, period.label})
    corrections = correction_rows(warehouse, tid, [Period.parse(p) for p in labels])
    inputs = {
        label: Rated(
            inputs_sha256(
                book, tid, Period.parse(label), month_rows.get(label, ()), corrections[label]
            ),
            frozenset(corrections[label]),
        )
        for label in labels
    }
    now_ids = set(corrections[period.label])
    lines += _correction_lines(
        book, tid, period, metered, lines, corrections[period.label], now_ids
    )
    usage = _with(metered, corrections[period.label], now_ids)
    # Only what the statements before this one rated: composing an issued period again
    # must find the adjustments it carried.
    last_rated = rated_inputs(warehouse, tid, (statement_id_of(t) for t, _ in issued.values()))
    befores = [
        Period.parse(p)
        for p in sorted(earlier_periods)
        if last_rated.get(p, NOT_RATED).sha256 != inputs[p].sha256
    ]
    usage_before = read_periods_to_rate(warehouse, book, tid, befores)
    for before in befores:
        mine = corrections[before.label]
        known = set(last_rated.get(before.label, NOT_RATED).correction_ids) & set(mine)
        base = _with(usage_before[before.label], mine, known)
        base_lines = _rate(book, tid, before, base)
        lines.extend(adjustment_lines(base_lines, billed.get(before.label, [])))
        lines += _correction_lines(book, tid, before, base, base_lines, mine, set(mine) - known)
    adjusted = {p: statement_id_of(issued[p][0]) for p in issued if p < period.label}
    billed_contracts = {ln.contract_id for ln in lines}
    taxes = {
        c.contract_id: c.tax
        for c in book.contracts
        if c.contract_id in billed_contracts and c.tax is not None
    }
    billed_ids = {cid for ln in lines if ln.correction for cid in ln.correction.split(",")}
    shown = corrections_billed(warehouse, tid, billed_ids)
    data = StatementInput(tenant, period, contracts, lines, usage, adjusted, heading, taxes, shown)
    rated = {p: inputs[p] for p in (period.label, *(b.label for b in befores))}
    return Composed(build_statement(data), usage, rated)


def statement_id_of(canonical_json: str) -> str:
    return str(parse_statement(canonical_json)["statement_id"])


def unbilled_months(
    warehouse: Warehouse,
    book: ContractBook,
    tenant_id: str,
    period: Period,
    issued: dict[str, tuple[str, str]],
    billed: dict[str, list[Line]],
) -> set[str]:
    """Months before ``period`` that no statement of the tenant has billed, and that are
    owed: with usage, or (after the tenant's first statement) with a contract in force."""
    covered = set(issued) | set(billed)
    owed = set(months_with_usage(warehouse, tenant_id, period))
    if issued:
        month = Period.parse(min(issued))
        while month.label < period.label:
            if book.contracts_of(tenant_id, month.start_us, month.end_us):
                owed.add(month.label)
            month = month.next()
    return owed - covered


def write_files(out: Path, statement: dict[str, Any], digest_sha256: str) -> tuple[Path, ...]:
    folder = out / statement["tenant"]["tenant_id"]
    folder.mkdir(parents=True, exist_ok=True)
    stem = statement["statement_id"]  # a draft's ends in -DRAFT: never an issued file's name
    json_bytes = draft_file_bytes(statement) if is_draft(statement) else json_file_bytes(statement)
    contents = {
        f"{stem}.json": json_bytes,
        f"{stem}.csv": render_csv(statement),
        f"{stem}.html": render_html(statement, digest_sha256),
    }
    paths = []
    for name, data in contents.items():
        path = folder / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        paths.append(path)
    return tuple(paths)


def issue_statement(
    warehouse: Warehouse,
    book: ContractBook,
    tenant_id: str,
    period: Period,
    out: Path,
    clock: Clock = utc_now,
    force: bool = False,
    dry_run: bool = False,
    *,
    issuer: Issuer,
    numbers_held: int = 0,
) -> Outcome:
    """Issue one statement; ``numbers_held``: numbers a dry run has shown already, so the
    next one shows the number it would get."""
    tenant = book.tenant(tenant_id) or Tenant(tenant_id, tenant_id)
    issued = issued_statements(warehouse, tenant_id)
    later = sorted(p for p in issued if p > period.label)
    if period.label not in issued and later:
        raise BillingError(
            f"tenant {tenant_id!r}: {later[0]} is already issued; {period.label} cannot be "
            f"issued after a later period (its usage is billed on the {later[0]} statement "
            "and later ones, as prior-period lines)"
        )
    if period.label in issued:
        text, stored_digest = issued[period.label]
        statement = parse_statement(text)
        files = () if dry_run else write_files(out, statement, stored_digest)
        fresh = compose(
            warehouse, book, tenant, period, {p: v for p, v in issued.items() if p < period.label}
        )
        # Compared as charges, not bytes: an issued statement rendered by an older version
        # (another rate spelling) has not changed because the renderer did.
        if list(lines_of(fresh)) == list(lines_of(statement)):
            return Outcome(
                tenant_id, "already issued", "", stored_digest, statement["totals"]["total"], files
            )
        return Outcome(
            tenant_id,
            "already issued, data changed",
            "usage or contracts changed since issue; the issued statement stands and the "
            "difference will appear as an adjustment on the next statement",
            stored_digest,
            statement["totals"]["total"],
            files,
        )
    number = issuer.number(next_statement_sequence(warehouse, issuer.number_prefix) + numbers_held)
    heading = Heading(issuer, number, clock().date())
    composed = _compose(warehouse, book, tenant, period, issued, heading)
    statement = composed.statement
    if not force and not composed.usage:
        raise BillingError(
            f"tenant {tenant_id!r} has a contract but no usage metered in {period.label}; "
            "if that is right, pass --force to issue it (a minimum commitment is billed)"
        )
    statement_digest = digest(statement)
    if dry_run:
        return Outcome(tenant_id, "would issue", "", statement_digest, statement["totals"]["total"])
    record_statement(warehouse, statement, statement_digest, clock, composed.inputs)
    files = write_files(out, statement, statement_digest)
    return Outcome(tenant_id, "issued", "", statement_digest, statement["totals"]["total"], files)


def run_statements(
    warehouse: Warehouse,
    period_label: str,
    out: Path,
    tenant_id: str | None = None,
    clock: Clock = utc_now,
    force: bool = False,
    dry_run: bool = False,
    *,
    issuer: Issuer,
) -> list[Outcome]:
    """Issue (``dry_run``: only compose) the period's statements. Issuing cannot be undone,
    so it waits for the pipeline: every partition must have closed every window of the
    period (event time past its end plus the lateness bound), and a tenant with a contract
    but no usage is refused; ``force`` issues anyway."""
    period = Period.parse(period_label)
    if period.end_us > epoch_us(clock()):
        raise BillingError(
            f"period {period.label} has not ended yet; statements cover closed months"
        )
    closed = windows_closed_before(warehouse)
    if not force and (closed is None or closed < period.end_us):
        state = (
            "nothing has been metered yet (pipeline_progress is empty)"
            if closed is None
            else f"the pipeline has closed its windows only up to {format_instant(closed)}"
        )
        raise BillingError(
            f"{state}, and {period.label} ends {format_instant(period.end_us)}: wait until "
            "every partition has passed it by the lateness bound (meter status), or pass "
            "--force to issue from what is metered now"
        )
    book = read_contract_book(warehouse)
    tenants = [tenant_id] if tenant_id is not None else tenants_of_period(warehouse, book, period)
    outcomes = []
    for tid in tenants:
        try:
            held = sum(o.status == "would issue" for o in outcomes)
            outcomes.append(
                issue_statement(
                    warehouse,
                    book,
                    tid,
                    period,
                    out,
                    clock,
                    force,
                    dry_run,
                    issuer=issuer,
                    numbers_held=held,
                )
            )
        except BillingError as exc:
            outcomes.append(Outcome(tid, "refused", str(exc)))
    return outcomes


def draft_documents(
    warehouse: Warehouse,
    period_label: str,
    tenant_id: str | None = None,
    clock: Clock = utc_now,
    *,
    issuer: Issuer,
) -> list[tuple[str, dict[str, Any] | None, str]]:
    """(tenant, DRAFT statement or None, why not) for each tenant of ``period`` as it
    stands now: the open month too, or any month not issued. Nothing is recorded, a draft
    has no digest, and ``verify-statement`` refuses one."""
    period = Period.parse(period_label)
    book = read_contract_book(warehouse)
    tenants = [tenant_id] if tenant_id is not None else tenants_of_period(warehouse, book, period)
    drafts: list[tuple[str, dict[str, Any] | None, str]] = []
    for tid in tenants:
        issued = issued_statements(warehouse, tid)
        if period.label in issued:
            drafts.append((tid, None, f"{period.label} is already issued"))
            continue
        tenant = book.tenant(tid) or Tenant(tid, tid)
        try:
            composed = compose(warehouse, book, tenant, period, issued, Heading(issuer))
        except BillingError as exc:
            drafts.append((tid, None, str(exc)))
            continue
        drafts.append((tid, mark_draft(composed, clock), ""))
    return drafts


def draft_statements(
    warehouse: Warehouse,
    period_label: str,
    out: Path,
    tenant_id: str | None = None,
    clock: Clock = utc_now,
    *,
    issuer: Issuer,
) -> list[Outcome]:
    """Each tenant's DRAFT statement for ``period`` (:func:`draft_documents`), as files."""
    outcomes = []
    for tid, statement, why in draft_documents(
        warehouse, period_label, tenant_id, clock, issuer=issuer
    ):
        if statement is None:
            outcomes.append(Outcome(tid, "refused", why))
            continue
        files = write_files(out, statement, "")
        outcomes.append(Outcome(tid, "draft", "", "", statement["totals"]["total"], files))
    return outcomes
