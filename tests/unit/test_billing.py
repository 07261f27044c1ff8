"""Billing logic without servers: contract refusals, rounding, adjustments, canonical form."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from billing.contracts import load_contract_file, parse_contract_book
from billing.errors import BillingError, ContractError
from billing.rating import Line, Period, UsageRow, adjustment_lines, rate_period, round_money
from billing.render import render_csv, render_html
from billing.statement import (
    StatementInput,
    build_statement,
    digest,
    json_file_bytes,
    verify_json_file,
)

H = 3_600_000_000
EXAMPLE = Path(__file__).parents[2] / "billing" / "contracts.example.json"


def _book() -> dict:
    return {
        "tenants": [{"tenant_id": "aurora-labs", "name": "Aurora"}],
        "contracts": [
            {
                "contract_id": "A1",
                "tenant_id": "aurora-labs",
                "currency": "USD",
                "term": {"start": "2026-01-01", "end": "2027-01-01"},
                "committed_gpus": 8,
                "payment_terms_days": 30,
                "minimum_monthly_commitment": "100.00",
                "rates": [{"sku": "H100", "rate_per_gpu_hour": "2.50"}],
            }
        ],
    }


def test_the_example_contract_book_loads():
    book = load_contract_file(EXAMPLE)
    assert {c.tenant_id for c in book.contracts} == {t.tenant_id for t in book.tenants}
    aurora = book.contracts_of("aurora-labs", 0, 2**62)[0]
    assert [r.rate_per_gpu_hour for r in aurora.rates if r.sku == "H100"] == [
        Decimal("2.45"),
        Decimal("2.19"),
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda b: b["contracts"][0]["rates"][0].update(sku="A100X"),
            "contract 'A1' rates[0].sku: 'A100X' is not a known SKU",
        ),
        (
            lambda b: b["contracts"][0]["rates"][0].update(rate_per_gpu_hour="2.1234567891"),
            "rates[0].rate_per_gpu_hour: '2.1234567891' has more than 9 decimal places",
        ),
        (
            lambda b: b["contracts"][0]["rates"][0].update(rate_per_gpu_hour="-1"),
            "must be a finite amount ≥ 0",
        ),
        (
            lambda b: b["contracts"][0].update(minimum_monthly_commitment="10.001"),
            "minimum_monthly_commitment: '10.001' has more than 2 decimal places",
        ),
        (lambda b: b["contracts"][0].update(currency="XBT"), "currency: 'XBT' is not one of"),
        (lambda b: b["contracts"][0]["term"].update(end="2025-12-31"), "is not after start"),
        (
            lambda b: b["contracts"][0]["term"].update(start="2026-01-01T00:00:30Z"),
            "must fall on a whole minute",
        ),
        (
            lambda b: b["contracts"][0]["term"].update(start="2026-01-01T00:00:00"),
            "has no UTC offset",
        ),
        (
            lambda b: b["contracts"][0]["term"].update(start="2026-01-01T06:00:00Z"),
            "term.start: '2026-01-01T06:00:00Z' must be a whole UTC day (midnight)",
        ),
        (
            lambda b: b["contracts"][0]["term"].update(end="2026-12-31T23:59:00Z"),
            "term.end: '2026-12-31T23:59:00Z' must be a whole UTC day (midnight)",
        ),
        (
            lambda b: b["contracts"][0]["rates"].append(
                {"sku": "H100", "rate_per_gpu_hour": "1", "effective_from": "2028-01-01"}
            ),
            "rates[1].effective_from: outside the contract term",
        ),
        (
            lambda b: b["contracts"][0]["rates"].append({"sku": "H100", "rate_per_gpu_hour": "1"}),
            "a second rate for H100 from 2026-01-01T00:00:00Z",
        ),
        (
            lambda b: b["contracts"].append({**b["contracts"][0], "contract_id": "A2"}),
            "contract 'A2': its term overlaps contract 'A1' of the same tenant 'aurora-labs'",
        ),
        (
            lambda b: b["contracts"][0].update(tenant_id="borealis-ai"),
            "'borealis-ai' is not listed under tenants",
        ),
        (lambda b: b["contracts"][0].update(tenant_id="unallocated"), "not a billable tenant"),
        (lambda b: b["contracts"][0].update(comitted_gpus=3), "unknown field(s) comitted_gpus"),
        (lambda b: b["contracts"][0].pop("rates"), "missing rates"),
        (lambda b: b["contracts"][0].update(committed_gpus=2.5), "committed_gpus: "),
        (lambda b: b["contracts"][0].pop("payment_terms_days"), "missing payment_terms_days"),
        (
            lambda b: b["contracts"][0].update(payment_terms_days=400),
            "payment_terms_days: 400 must be a whole number of days from 0 to 365",
        ),
        (
            lambda b: b["contracts"][0].update(tax={"label": "VAT", "rate": "20"}),
            "tax.rate: '20' is a fraction below 1",
        ),
        (
            lambda b: b["contracts"][0].update(tax={"label": "", "rate": "0.2"}),
            "tax.label: must be 1–64 characters",
        ),
        (lambda b: b["contracts"][0].update(tax={"rate": "0.2"}), "tax: missing label"),
    ],
)
def test_invalid_contracts_are_refused_with_a_precise_message(edit, message):
    book = _book()
    edit(book)
    with pytest.raises(ContractError) as caught:
        parse_contract_book(book)
    assert message in str(caught.value)


def test_a_valid_book_parses_and_splits_rates_at_changes():
    book = _book()
    book["contracts"][0]["rates"].append(
        {"sku": "H100", "rate_per_gpu_hour": "2", "effective_from": "2026-06-01T12:30:00Z"}
    )
    (contract,) = parse_contract_book(book).contracts
    first, second = contract.rates
    assert first.to_us == second.from_us == 1_780_317_000_000_000
    assert (first.rate_per_gpu_hour, second.rate_per_gpu_hour) == (Decimal("2.50"), Decimal(2))


def test_rounding_is_half_up_to_the_minor_unit():
    assert [str(round_money(Decimal(x), 2)) for x in ("0.005", "0.015", "0.025", "-0.005")] == [
        "0.01",
        "0.02",
        "0.03",
        "-0.01",
    ]
    assert str(round_money(Decimal("12.5"), 0)) == "13"


def test_a_rate_change_splits_usage_and_usage_outside_the_term_is_unrated():
    book = _book()
    book["contracts"][0]["rates"].append(
        {"sku": "H100", "rate_per_gpu_hour": "2", "effective_from": "2026-06-15"}
    )
    contracts = list(parse_contract_book(book).contracts)
    june = Period.parse("2026-06")
    before = UsageRow("H100", "sc1", june.start_us + 60_000_000, 10 * H, 0, 0)
    after = UsageRow("H100", "sc1", june.start_us + 15 * 86_400_000_000, 10 * H, 0, 0)
    lines, unrated = rate_period(contracts, june, [before, after])
    assert [(ln.kind, ln.quantity, ln.amount) for ln in lines] == [
        ("usage", 10 * H, Decimal("25.00")),
        ("usage", 10 * H, Decimal("20.00")),
        ("commitment_true_up", 0, Decimal("55.00")),
    ]
    assert unrated == []
    other = UsageRow("H200", "sc1", june.start_us, H, 0, 0)
    assert [u.sku for u in rate_period(contracts, june, [other])[1]] == ["H200"]
    outside = Period.parse("2027-02")
    stray = UsageRow("H100", "sc1", outside.start_us, H, 0, 0)
    assert rate_period(contracts, outside, [stray])[1][0].allocated_us == H


def _line(kind: str, qty: int, amount: str, period: str = "2026-09") -> Line:
    return Line(
        kind, period, "A1", "H100", "sc1", 1, 2, qty, "gpu_us", Decimal("2.5"), Decimal(amount)
    )


def test_adjustments_are_now_minus_everything_billed_before():
    billed = [
        _line("usage", 10, "25.00"),
        _line("commitment_true_up", 0, "75.00"),
        _line("usage", 2, "5.00"),
    ]  # an adjustment already billed
    now = [_line("usage", 40, "100.00")]
    assert [(a.kind, a.quantity, a.amount) for a in adjustment_lines(now, billed)] == [
        ("commitment_true_up", 0, Decimal("-75.00")),
        ("usage", 28, Decimal("70.00")),
    ]
    assert adjustment_lines(billed[:1], billed[:1]) == []


def _statement(lines: list[Line]) -> dict:
    book = parse_contract_book(_book())
    period = Period.parse("2026-10")
    usage = [UsageRow("H100", "sc1", period.start_us + 86_400_000_000, 3 * H, 0, 0)]
    return build_statement(
        StatementInput(book.tenants[0], period, list(book.contracts), lines, usage)
    )


def test_the_canonical_file_is_deterministic_and_its_digest_detects_any_change():
    lines = [_line("usage", 3 * H, "7.50", "2026-10"), _line("usage", 5, "0.01")]
    one, two = _statement(lines), _statement(list(reversed(lines)))
    assert json_file_bytes(one) == json_file_bytes(two)
    assert render_csv(one) == render_csv(two)
    assert render_html(one, digest(one)) == render_html(two, digest(two))
    data = json_file_bytes(one)
    assert verify_json_file(data) == digest(one)
    assert one["totals"]["total"] == "7.51" and one["totals"]["prior_period_adjustments"] == "0.01"
    assert one["daily_allocated_us"][1] == {
        "date": "2026-10-02",
        "allocated_us": 3 * H,
        "mig_slice_us": 0,
    }
    tampered = json.loads(data)
    tampered["statement"]["lines"][0]["amount"] = "7.49"
    with pytest.raises(BillingError, match="digest mismatch"):
        verify_json_file(json.dumps(tampered).encode())


def test_a_statement_has_one_currency():
    book = _book()
    second = copy.deepcopy(book["contracts"][0])
    second.update(
        contract_id="A2", currency="EUR", term={"start": "2027-01-01", "end": "2028-01-01"}
    )
    book["contracts"].append(second)
    parsed = parse_contract_book(book)
    with pytest.raises(BillingError, match="exactly one currency"):
        build_statement(
            StatementInput(
                parsed.tenants[0], Period.parse("2026-12"), list(parsed.contracts), [], []
            )
        )


def test_the_html_statement_shows_totals_lines_and_a_daily_chart():
    statement = _statement([_line("usage", 3 * H, "7.50", "2026-10")])
    page = render_html(statement, digest(statement)).decode()
    assert "Total due" in page and "7.50 USD" in page and "<svg" in page
    assert page.count("<rect") == 31  # one bar per day of October
    assert digest(statement) in page


def test_the_issuer_file_is_validated_like_the_contracts_file(tmp_path):
    from billing.issuer import load_issuer_file, parse_issuer

    example = load_issuer_file(EXAMPLE.with_name("issuer.example.json"))
    assert example.number(42) == "SC-000042" and example.address
    good = {
        "legal_name": "Cloud Ltd",
        "address": ["1 Road"],
        "tax_id": "GB123",
        "statement_number_prefix": "CL-",
    }
    assert parse_issuer(good).to_doc()["legal_name"] == "Cloud Ltd"
    for edit, message in [
        ({"statement_number_prefix": "cl"}, "statement_number_prefix: 'cl' must be"),
        ({"address": []}, "issuer address: a list of 1–6 lines"),
        ({"tax_id": ""}, "issuer tax_id: must be 1–64 characters"),
        ({"legal_name": "A\nB"}, "holds a control character"),
        ({"vat": "x"}, "unknown field(s) vat"),
    ]:
        with pytest.raises(ContractError, match=re.escape(message)):
            parse_issuer({**good, **edit})
    with pytest.raises(ContractError, match="missing tax_id"):
        parse_issuer({k: v for k, v in good.items() if k != "tax_id"})
    with pytest.raises(ContractError, match="cannot read issuer file"):
        load_issuer_file(tmp_path / "missing.json")


def test_a_statement_that_comes_to_a_credit_says_so_and_not_total_due():
    """A correction or an earlier month's adjustment can leave a month below zero: the
    tenant is owed money, and an accounts-payable reader must not see "Total due"."""
    statement = _statement(
        [_line("usage", 3 * H, "7.50", "2026-10"), _line("usage", -8 * H, "-20.00", "2026-09")]
    )
    assert statement["totals"]["total"] == "-12.50"
    page = render_html(statement, digest(statement)).decode()
    assert "Total due" not in page
    assert "Credit to you" in page and "12.50 USD" in page
    rows = list(csv.reader(io.StringIO(render_csv(statement).decode())))
    (total,) = [r for r in rows if "total" in r]
    assert "Credit to you" in total and "-12.50" in total
