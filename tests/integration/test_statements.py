"""Statements against the real ClickHouse, every amount computed by hand below.

The contract (USD, term from 2026-09-16, 4 committed GPUs, minimum 5,000.00 a month,
energy 0.10/kWh, SLA credit ×2) and the usage are chosen so that each rule shows:

    September (term covers 15 of 30 days → minimum 2,500.00)
      H100/sc1   900 GPU-h × 2.50                      = 2,250.00
      true-up    2,500.00 - 2,250.00                   =   250.00    total 2,500.00
    120 GPU-h of September usage arrive after September was issued.
    October (rate change H100 2.50 → 2.00 at 2026-10-16T00:00Z)
      H100/sc1   100 GPU-h × 2.50                      =   250.00
      H100/sc1   (50 GPU-h + 1 µs) × 2.00 = 100.00000000055…   →   100.00
      H200/sc2   7 GPU-h × 3.333333333 = 23.333333331  →    23.33
      energy     1,000 kWh × 0.10 (H100)               =   100.00
      energy     12.345 kWh × 0.10 = 1.2345            →     1.23
      true-up    5,000.00 - 373.33                     = 4,626.67
      credit     2 unhealthy GPU-h × 2.50 × 2          =   -10.00
      adjustment for September: usage +120 GPU-h × 2.50 = +300.00,
                 true-up 0 - 250.00                    =  -250.00
      total 250 + 100 + 23.33 + 100 + 1.23 + 4,626.67 - 10 + 300 - 250 = 5,141.23
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from billing.contracts import parse_contract_book
from billing.issue import draft_statements, run_statements
from billing.issuer import Issuer
from billing.rating import Period
from billing.statement import verify_json_file
from billing.store import store_contracts
from core.windows import month_start
from tests.browser import render
from warehouse.backfill import fill_day, fill_month

pytestmark = pytest.mark.integration

ISSUER = Issuer("Supercluster Cloud, Inc.", ("1 Test Way", "Testville"), "EIN 00-0000000", "SC-")

H = 3_600_000_000  # GPU-µs per GPU-hour, mJ per kWh
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

CONTRACTS = {
    "tenants": [
        {"tenant_id": "aurora-labs", "name": "Aurora Labs, Inc."},
        {"tenant_id": "borealis-ai", "name": "Borealis AI Ltd."},
    ],
    "contracts": [
        {
            "contract_id": "AUR-1",
            "tenant_id": "aurora-labs",
            "currency": "USD",
            "term": {"start": "2026-09-16", "end": "2027-09-16"},
            "committed_gpus": 4,
            "payment_terms_days": 30,
            "minimum_monthly_commitment": "5000.00",
            "energy_rate_per_kwh": "0.10",
            "sla_credit_multiplier": "2",
            "rates": [
                {"sku": "H100", "rate_per_gpu_hour": "2.50"},
                {
                    "sku": "H100",
                    "rate_per_gpu_hour": "2.00",
                    "effective_from": "2026-10-16T00:00:00Z",
                },
                {"sku": "H200", "rate_per_gpu_hour": "3.333333333"},
            ],
        },
        {
            "contract_id": "BOR-1",
            "tenant_id": "borealis-ai",
            "currency": "USD",
            "term": {"start": "2026-01-01", "end": "2027-01-01"},
            "committed_gpus": 1,
            "payment_terms_days": 30,
            "minimum_monthly_commitment": "0",
            "rates": [{"sku": "H100", "rate_per_gpu_hour": "9.99"}],
        },
    ],
}

PARTIAL_COLUMNS = (
    "tenant_id",
    "sku",
    "cluster",
    "window_start",
    "source_partition",
    "allocated_us",
    "busy_us",
    "unhealthy_us",
    "energy_mj",
    "sample_count",
    "version",
    "written_at",
)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _usage(warehouse, tenant, sku, cluster, window, allocated, unhealthy=0, energy=0, part=0):
    warehouse.insert(
        "usage_rollup_partials",
        PARTIAL_COLUMNS,
        [(tenant, sku, cluster, _at(window), part, allocated, 0, unhealthy, energy, 1, 1, NOW)],
    )
    _fill_coarse(warehouse, window)


def _fill_coarse(warehouse, window: str) -> None:
    """The hour, day and month rollups of the window, as the worker writes them beside the
    minute rows (the same sums: warehouse/backfill.py)."""
    at_us = int(_at(window).timestamp()) * 1_000_000
    fill_day(warehouse, at_us - at_us % 86_400_000_000)
    fill_month(warehouse, month_start(at_us))


def _late_usage(warehouse, tenant, sku, cluster, window, allocated):
    warehouse.insert(
        "usage_adjustments",
        (
            "tenant_id",
            "sku",
            "cluster",
            "window_start",
            "source_partition",
            "source_offset",
            "allocated_us",
            "busy_us",
            "unhealthy_us",
            "energy_mj",
            "sample_count",
            "recorded_at",
        ),
        [(tenant, sku, cluster, _at(window), 0, 99, allocated, 0, 0, 0, 1, NOW)],
    )
    _fill_coarse(warehouse, window)


def _pipeline_closed_before(warehouse, when: str, partition: int = 0, offset: int = 0) -> None:
    """A partition progress row as the worker writes it: its windows closed before ``when``."""
    from streams.output.sink import PROGRESS_COLUMNS

    closed_us = int(_at(when).timestamp()) * 1_000_000
    warehouse.insert(
        "partition_state",
        (*PROGRESS_COLUMNS, "written_at"),
        [("usage", partition, offset, 0, 0, 0, 0, 0, 0, closed_us, NOW)],
    )


@pytest.fixture
def billed(warehouse):
    _pipeline_closed_before(warehouse, "2026-12-01 00:00:00")  # caught up through November
    store_contracts(warehouse, parse_contract_book(CONTRACTS), "test", clock=lambda: NOW)
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-09-20 10:00:00", 900 * H)
    # Another tenant's usage in the same windows: must never reach aurora's statement.
    _usage(warehouse, "borealis-ai", "H100", "sc1", "2026-09-20 10:00:00", 77 * H + 12345)
    _usage(warehouse, "borealis-ai", "H100", "sc1", "2026-10-10 12:00:00", 55 * H + 678)
    return warehouse


def _lines(statement):
    return [
        (ln["kind"], ln["for_period"], ln["sku"], ln["cluster"], ln["quantity"], ln["amount"])
        for ln in statement["lines"]
    ]


def _issue(warehouse, period, out, tenant="aurora-labs"):
    (outcome,) = run_statements(warehouse, period, out, tenant, clock=lambda: NOW, issuer=ISSUER)
    assert outcome.status != "refused", outcome.detail
    document = json.loads(outcome.files[0].read_bytes())
    assert verify_json_file(outcome.files[0].read_bytes()) == outcome.digest_sha256
    return outcome, document["statement"]


def test_statement_amounts_equal_the_hand_computed_ones_to_the_cent(billed, tmp_path: Path):
    wh = billed
    sept, september = _issue(wh, "2026-09", tmp_path / "a")
    assert sept.status == "issued"
    assert _lines(september) == [
        ("usage", "2026-09", "H100", "sc1", 900 * H, "2250.00"),
        ("commitment_true_up", "2026-09", "", "", 0, "250.00"),
    ]
    assert september["totals"]["total"] == "2500.00"

    _late_usage(wh, "aurora-labs", "H100", "sc1", "2026-09-21 00:00:00", 120 * H)
    _usage(
        wh,
        "aurora-labs",
        "H100",
        "sc1",
        "2026-10-10 12:00:00",
        100 * H,
        unhealthy=2 * H,
        energy=1000 * H,
    )
    _usage(wh, "aurora-labs", "H100", "sc1", "2026-10-20 08:00:00", 50 * H + 1)
    _usage(wh, "aurora-labs", "H200", "sc2", "2026-10-20 08:00:00", 7 * H, energy=44_442_000_000)

    octo, october = _issue(wh, "2026-10", tmp_path / "a")
    assert _lines(october) == [
        ("usage", "2026-10", "H100", "sc1", 100 * H, "250.00"),
        ("usage", "2026-10", "H100", "sc1", 50 * H + 1, "100.00"),
        ("usage", "2026-10", "H200", "sc2", 7 * H, "23.33"),
        ("energy", "2026-10", "H100", "sc1", 1000 * H, "100.00"),
        ("energy", "2026-10", "H200", "sc2", 44_442_000_000, "1.23"),
        ("commitment_true_up", "2026-10", "", "", 0, "4626.67"),
        ("sla_credit", "2026-10", "H100", "sc1", 2 * H, "-10.00"),
        ("usage", "2026-09", "H100", "sc1", 120 * H, "300.00"),
        ("commitment_true_up", "2026-09", "", "", 0, "-250.00"),
    ]
    assert october["totals"] == {
        "usage": "373.33",
        "energy": "101.23",
        "commitment_true_up": "4626.67",
        "sla_credits": "-10.00",
        "prior_period_adjustments": "50.00",
        "subtotal": "5141.23",
        "tax": "0.00",
        "total": "5141.23",
    }
    rate_split = [(ln["rate_from"], ln["rate_to"], ln["rate"]) for ln in october["lines"][:2]]
    assert rate_split == [
        ("2026-10-01T00:00:00Z", "2026-10-16T00:00:00Z", "2.50"),
        ("2026-10-16T00:00:00Z", "2026-11-01T00:00:00Z", "2.00"),
    ]
    # The lines add up to the total, and ClickHouse recorded the same total and digest.
    assert sum(Decimal(ln["amount"]) for ln in october["lines"]) == Decimal("5141.23")
    assert wh.execute(
        "SELECT period, total, digest_sha256 FROM issued_statements "
        "WHERE tenant_id = 'aurora-labs' ORDER BY period"
    ) == [
        ("2026-09", Decimal("2500"), sept.digest_sha256),
        ("2026-10", Decimal("5141.23"), octo.digest_sha256),
    ]
    # Nothing of the other tenant's in aurora's files.
    for path in (*sept.files, *octo.files):
        text = path.read_text()
        assert "borealis" not in text.lower() and "BOR-1" not in text and "9.99" not in text
        assert str(77 * H + 12345) not in text and str(55 * H + 678) not in text


def test_an_issued_statement_is_never_changed_and_reruns_are_byte_identical(billed, tmp_path):
    wh = billed
    first, _ = _issue(wh, "2026-09", tmp_path / "a")
    again, _ = _issue(wh, "2026-09", tmp_path / "b")
    assert again.status == "already issued"
    assert [p.read_bytes() for p in first.files] == [p.read_bytes() for p in again.files]

    _late_usage(wh, "aurora-labs", "H100", "sc1", "2026-09-21 00:00:00", 120 * H)
    late, _ = _issue(wh, "2026-09", tmp_path / "c")
    assert late.status == "already issued, data changed"
    assert "adjustment on the next statement" in late.detail
    assert late.digest_sha256 == first.digest_sha256
    assert [p.read_bytes() for p in first.files] == [p.read_bytes() for p in late.files]
    assert wh.execute("SELECT count() FROM statements WHERE period = '2026-09'") == [(1,)]


def test_an_open_month_and_usage_without_a_rate_are_refused(billed, tmp_path):
    from billing.errors import BillingError

    with pytest.raises(BillingError, match="has not ended yet"):
        run_statements(billed, "2026-11", tmp_path, clock=lambda: NOW, issuer=ISSUER)
    _usage(billed, "aurora-labs", "B200", "sc1", "2026-10-02 00:00:00", 3 * H)
    (outcome,) = run_statements(
        billed, "2026-10", tmp_path, "aurora-labs", clock=lambda: NOW, issuer=ISSUER
    )
    assert outcome.status == "refused"
    assert "B200/sc1" in outcome.detail and "no contract rate" in outcome.detail
    assert billed.execute("SELECT count() FROM statements") == [(0,)]


def test_reconcile_compares_a_supplier_invoice_line_by_line(billed, tmp_path):
    from billing.reconcile import reconcile

    invoice = tmp_path / "invoice.csv"
    invoice.write_text(
        "supplier,invoice_id,period,tenant_id,sku,cluster,gpu_hours,amount,currency\n"
        "nimbus,INV-7,2026-09,aurora-labs,H100,sc1,900.004,2250.00,USD\n"
        "nimbus,INV-7,2026-09,borealis-ai,H100,sc1,78.000003,,USD\n"
        "nimbus,INV-7,2026-09,borealis-ai,H200,sc1,1,,USD\n"
    )
    report = reconcile(billed, "2026-09", invoice, Decimal("0.01"), Decimal("0.01"))
    text = "\n".join(report.lines)
    assert "OK   aurora-labs/H100/sc1: 900.004 GPU-h (metered 900.000000)" in text
    assert (
        "FLAG borealis-ai/H100/sc1 (invoice rows 3): invoice 78.000003 GPU-h vs metered "
        "77.000003 (difference +1.000000)"
    ) in text
    assert "FLAG borealis-ai/H200/sc1 (invoice rows 4): invoice 1 GPU-h vs metered 0.000000" in text
    assert report.findings == 2 and report.gaps_ok
    # This fixture wrote rollups without ledger rows: (a) must say so and fail the run.
    assert not report.ledger_ok and report.exit_code == 1

    invoice.write_text(invoice.read_text().replace("2250.00", "2250.02"))
    text = "\n".join(reconcile(billed, "2026-09", invoice).lines)
    assert "invoice amount 2,250.02 vs rated 2,250.00" in text


def _issue_at(warehouse, period, out, clock, tenant="aurora-labs", force=False):
    (outcome,) = run_statements(
        warehouse, period, out, tenant, clock=lambda: clock, force=force, issuer=ISSUER
    )
    assert outcome.status != "refused", outcome.detail
    return json.loads(outcome.files[0].read_bytes())["statement"]


def test_usage_of_a_month_never_issued_is_billed_once_on_the_next_statement(billed, tmp_path):
    """September (900 GPU-h, minimum prorated to 2,500.00) is skipped; October is issued."""
    wh = billed
    _usage(wh, "aurora-labs", "H100", "sc1", "2026-10-10 12:00:00", 100 * H)
    _, october = _issue(wh, "2026-10", tmp_path)
    assert [ln for ln in _lines(october) if ln[1] == "2026-09"] == [
        ("usage", "2026-09", "H100", "sc1", 900 * H, "2250.00"),
        ("commitment_true_up", "2026-09", "", "", 0, "250.00"),
    ]
    assert october["totals"]["prior_period_adjustments"] == "2500.00"
    assert october["totals"]["total"] == "7500.00"  # 250 + 4,750 true-up + September's 2,500
    billed_for = wh.execute(
        "SELECT for_period, sum(amount) FROM billed_by_period WHERE tenant_id = 'aurora-labs' "
        "GROUP BY for_period ORDER BY for_period"
    )
    assert billed_for == [("2026-09", Decimal("2500")), ("2026-10", Decimal("5000"))]

    # September itself can no longer be issued: it was billed on October's statement.
    (refused,) = run_statements(
        wh, "2026-09", tmp_path, "aurora-labs", clock=lambda: NOW, issuer=ISSUER
    )
    assert refused.status == "refused" and "2026-10" in refused.detail
    # And it is billed once: November carries no September line (nothing changed).
    # (November has no usage: issuing its minimum alone takes --force.)
    november = _issue_at(wh, "2026-11", tmp_path, datetime(2026, 12, 2, tzinfo=UTC), force=True)
    assert [ln for ln in _lines(november) if ln[1] != "2026-11"] == []


def test_a_skipped_month_with_a_minimum_but_no_usage_is_billed_on_the_next_statement(
    billed, tmp_path
):
    """Once billing has started, every month of the term is billed: October (no usage,
    minimum 5,000.00) is skipped between September and November."""
    wh = billed
    _issue(wh, "2026-09", tmp_path)
    november = _issue_at(wh, "2026-11", tmp_path, datetime(2026, 12, 2, tzinfo=UTC), force=True)
    assert [ln for ln in _lines(november) if ln[1] == "2026-10"] == [
        ("commitment_true_up", "2026-10", "", "", 0, "5000.00"),
    ]


def test_usage_without_any_contract_is_flagged_by_reconcile_and_refused_with_its_windows(
    billed, tmp_path
):
    from billing.reconcile import reconcile

    _usage(billed, "cinder-research", "H100", "sc1", "2026-09-03 07:15:00", 4 * H)
    # aurora's contract starts 2026-09-16: usage before it has no contract either.
    _usage(billed, "aurora-labs", "H100", "sc1", "2026-09-02 00:00:00", 1 * H)
    report = reconcile(billed, "2026-09")
    text = "\n".join(report.lines)
    assert "FLAG cinder-research: no contract in 2026-09" in text
    assert "14400000000 GPU-µs on H100/sc1 in the window starting 2026-09-03T07:15:00Z" in text
    assert (
        "aurora-labs" in text
        and "3600000000 GPU-µs on H100/sc1 in the window starting 2026-09-02T00:00:00Z" in text
    )
    assert report.findings == 2

    (outcome,) = run_statements(
        billed, "2026-09", tmp_path, "cinder-research", clock=lambda: NOW, issuer=ISSUER
    )
    assert outcome.status == "refused"
    assert "no contract" in outcome.detail and "2026-09-03T07:15:00Z" in outcome.detail


def test_rates_keep_their_written_form_in_json_csv_and_html(warehouse, tmp_path):
    book = {
        "tenants": [
            {"tenant_id": "kumo-labs", "name": "Kumo Labs K.K."},
            {"tenant_id": "aurora-labs", "name": "Aurora Labs, Inc."},
        ],
        "contracts": [
            {
                "contract_id": "KUMO-1",
                "tenant_id": "kumo-labs",
                "currency": "JPY",
                "term": {"start": "2026-01-01", "end": "2027-01-01"},
                "committed_gpus": 1,
                "payment_terms_days": 30,
                "minimum_monthly_commitment": "0",
                "energy_rate_per_kwh": "30",
                "rates": [
                    {"sku": "H100", "rate_per_gpu_hour": "720"},
                    {"sku": "H200", "rate_per_gpu_hour": "1000.5"},
                ],
            },
            {
                "contract_id": "DOLLAR-1",
                "tenant_id": "aurora-labs",
                "currency": "USD",
                "term": {"start": "2026-01-01", "end": "2027-01-01"},
                "committed_gpus": 1,
                "payment_terms_days": 30,
                "minimum_monthly_commitment": "0",
                "rates": [{"sku": "H100", "rate_per_gpu_hour": "2.30"}],
            },
        ],
    }
    store_contracts(warehouse, parse_contract_book(book), "test", clock=lambda: NOW)
    _pipeline_closed_before(warehouse, "2026-11-01 00:10:00")
    _usage(warehouse, "kumo-labs", "H100", "sc1", "2026-10-02 00:00:00", 10 * H, energy=2 * H)
    _usage(warehouse, "kumo-labs", "H200", "sc1", "2026-10-02 00:00:00", 2 * H)
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-10-02 00:00:00", 10 * H)
    outcomes = run_statements(warehouse, "2026-10", tmp_path, clock=lambda: NOW, issuer=ISSUER)
    assert [o.status for o in outcomes] == ["issued", "issued"]
    kumo = json.loads((tmp_path / "kumo-labs" / "kumo-labs-2026-10.json").read_bytes())
    assert [(ln["sku"], ln["rate"], ln["amount"]) for ln in kumo["statement"]["lines"]] == [
        ("H100", "720", "7200"),
        ("H200", "1000.5", "2001"),
        ("H100", "30", "60"),
    ]
    assert kumo["statement"]["contracts"][0]["energy_rate_per_kwh"] == "30"
    aurora = json.loads((tmp_path / "aurora-labs" / "aurora-labs-2026-10.json").read_bytes())
    assert aurora["statement"]["lines"][0]["rate"] == "2.30"
    for path in tmp_path.rglob("*-2026-10.*"):
        text = path.read_text()
        assert "E+" not in text and "E-" not in text, path.name
    csv_text = (tmp_path / "kumo-labs" / "kumo-labs-2026-10.csv").read_text()
    html = (tmp_path / "kumo-labs" / "kumo-labs-2026-10.html").read_text()
    assert ",720," in csv_text and "720 JPY" in html
    assert ",2.30," in (tmp_path / "aurora-labs" / "aurora-labs-2026-10.csv").read_text()


def test_statements_wait_for_the_pipeline_and_for_usage_unless_forced(warehouse, tmp_path):
    """Issuing cannot be undone: not on an empty pipeline, not before every partition has
    closed the month, not for a tenant with a contract and no usage; --force issues."""
    from billing.errors import BillingError

    store_contracts(warehouse, parse_contract_book(CONTRACTS), "test", clock=lambda: NOW)
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-10-10 12:00:00", 100 * H)
    with pytest.raises(BillingError, match="nothing has been metered yet"):
        run_statements(warehouse, "2026-10", tmp_path, clock=lambda: NOW, issuer=ISSUER)

    _pipeline_closed_before(warehouse, "2026-11-01 00:10:00", partition=0)
    _pipeline_closed_before(warehouse, "2026-10-31 23:50:00", partition=1)  # one lags
    with pytest.raises(BillingError, match="only up to 2026-10-31T23:50:00Z"):
        run_statements(warehouse, "2026-10", tmp_path, clock=lambda: NOW, issuer=ISSUER)
    assert warehouse.execute("SELECT count() FROM statements") == [(0,)]

    _pipeline_closed_before(warehouse, "2026-11-01 00:00:00", partition=1, offset=1)
    dry = run_statements(
        warehouse, "2026-10", tmp_path, clock=lambda: NOW, dry_run=True, issuer=ISSUER
    )
    assert [(o.tenant_id, o.status) for o in dry] == [
        ("aurora-labs", "would issue"),
        ("borealis-ai", "refused"),
    ]
    assert "no usage metered in 2026-10" in dry[1].detail and "--force" in dry[1].detail
    assert dry[0].total == "5000.00" and not any(tmp_path.iterdir())
    assert warehouse.execute("SELECT count() FROM statements") == [(0,)]

    forced = run_statements(
        warehouse, "2026-10", tmp_path, clock=lambda: NOW, force=True, issuer=ISSUER
    )
    assert [(o.tenant_id, o.status) for o in forced] == [
        ("aurora-labs", "issued"),
        ("borealis-ai", "issued"),
    ]


def test_a_draft_shows_a_month_as_it_stands_marked_everywhere_and_records_nothing(billed, tmp_path):
    from billing.errors import BillingError
    from billing.issue import draft_statements

    _usage(billed, "aurora-labs", "H100", "sc1", "2026-11-10 12:00:00", 100 * H)
    (draft,) = draft_statements(
        billed, "2026-11", tmp_path, "aurora-labs", clock=lambda: NOW, issuer=ISSUER
    )
    assert draft.status == "draft" and draft.digest_sha256 == ""
    names = sorted(p.name for p in draft.files)
    assert names == [f"aurora-labs-2026-11-DRAFT.{ext}" for ext in ("csv", "html", "json")]
    document = json.loads((tmp_path / "aurora-labs" / names[2]).read_bytes())
    assert document["draft"] is True and "digest_sha256" not in document
    statement = document["statement"]
    assert statement["draft"] is True and statement["statement_id"] == "aurora-labs-2026-11-DRAFT"
    # November as it stands: its usage, and September never issued, billed as prior period.
    assert ("usage", "2026-11", "H100", "sc1", 100 * H, "200.00") in _lines(
        statement
    )  # 2.00 since Oct 16
    assert ("usage", "2026-09", "H100", "sc1", 900 * H, "2250.00") in _lines(statement)
    html = (tmp_path / "aurora-labs" / names[1]).read_text()
    assert "DRAFT" in html.split("<h1>", 1)[1][:200] and "not issued" in html
    assert "SHA-256 digest" not in html
    csv_rows = (tmp_path / "aurora-labs" / names[0]).read_text().splitlines()[1:]
    assert all(row.startswith("aurora-labs-2026-11-DRAFT,") for row in csv_rows)
    with pytest.raises(BillingError, match="draft"):
        verify_json_file((tmp_path / "aurora-labs" / names[2]).read_bytes())
    assert billed.execute("SELECT count() FROM statements") == [(0,)]


def test_mig_slices_count_as_their_fraction_of_a_gpu_and_are_shown_apart(warehouse, tmp_path):
    """One whole H100 for 1 h and a 1g slice (1/7 of its GPU) for 7 h: 2 GPU-h towards the
    commitment, not 8; summary and chart keep the slice-hours apart."""
    from billing.reconcile import reconcile

    book = {
        "tenants": [{"tenant_id": "aurora-labs", "name": "Aurora Labs, Inc."}],
        "contracts": [
            {
                "contract_id": "MIG-1",
                "tenant_id": "aurora-labs",
                "currency": "USD",
                "term": {"start": "2026-10-01", "end": "2026-11-01"},
                "committed_gpus": 1,
                "payment_terms_days": 30,
                "minimum_monthly_commitment": "0",
                "rates": [
                    {"sku": "H100", "rate_per_gpu_hour": "2.00"},
                    {"sku": "H100-MIG-1g.10gb", "rate_per_gpu_hour": "0.40"},
                ],
            }
        ],
    }
    store_contracts(warehouse, parse_contract_book(book), "test", clock=lambda: NOW)
    _pipeline_closed_before(warehouse, "2026-11-01 00:10:00")
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-10-02 00:00:00", 1 * H)
    _usage(warehouse, "aurora-labs", "H100-MIG-1g.10gb", "sc1", "2026-10-02 00:00:00", 7 * H)
    (row,) = warehouse.execute(
        "SELECT allocated_us, mig_slice_us, overage_gpu_us FROM contract_position_by_month "
        "WHERE month = '2026-10-01'"
    )
    assert row == (2 * H, 7 * H, 0)

    _, statement = _issue(warehouse, "2026-10", tmp_path)
    summary = statement["usage_summary"]
    assert summary["full_gpu_allocated_us"] == 1 * H
    assert summary["mig_slice_allocated_us"] == 7 * H
    assert summary["mig_gpu_equivalent_us"] == 1 * H
    (day,) = [d for d in statement["daily_allocated_us"] if d["allocated_us"] or d["mig_slice_us"]]
    assert (day["date"], day["allocated_us"], day["mig_slice_us"]) == ("2026-10-02", H, 7 * H)
    html = (tmp_path / "aurora-labs" / "aurora-labs-2026-10.html").read_text()
    assert "MIG slices" in html
    text = "\n".join(reconcile(warehouse, "2026-10").lines)
    assert "used 2.000000 GPU-h of 744.000000 committed" in text


def test_the_prorated_minimum_and_what_each_adjustment_adjusts_are_shown(billed, tmp_path):
    """September: the term covers 15 of 30 days, so the minimum of 5,000.00 is 2,500.00."""
    wh = billed
    _, september = _issue(wh, "2026-09", tmp_path)
    assert september["minimum_commitments"] == [
        {
            "contract_id": "AUR-1",
            "monthly": "5000.00",
            "covered_from": "2026-09-16T00:00:00Z",
            "covered_to": "2026-10-01T00:00:00Z",
            "covered_seconds": 15 * 86_400,
            "month_seconds": 30 * 86_400,
            "prorated": "2500.00",
            "gpu_time": "2250.00",
            "true_up": "250.00",
        }
    ]
    html = (tmp_path / "aurora-labs" / "aurora-labs-2026-09.html").read_text()
    assert "15.000000 of 30 days" in html and "2,500.00 USD" in html
    assert "2027-09-16 (end exclusive)" in html

    _late_usage(wh, "aurora-labs", "H100", "sc1", "2026-09-21 00:00:00", 120 * H)
    _usage(wh, "aurora-labs", "H100", "sc1", "2026-10-10 12:00:00", 100 * H)
    _, october = _issue(wh, "2026-10", tmp_path)
    assert october["adjusts"] == {"2026-09": "aurora-labs-2026-09"}
    html = (tmp_path / "aurora-labs" / "aurora-labs-2026-10.html").read_text()
    assert "Adjustment for 2026-09 of statement aurora-labs-2026-09" in html
    assert "GPU time: H100 / sc1" in html and "Minimum commitment true-up" in html
    rows = (tmp_path / "aurora-labs" / "aurora-labs-2026-10.csv").read_text().splitlines()
    assert any("Adjustment for 2026-09 of statement aurora-labs-2026-09" in r for r in rows)


def test_a_rate_changing_inside_a_day_is_applied_to_the_minute(warehouse, tmp_path: Path):
    """Statements read a month as day rollups, except a day inside which a rate changes:
    that day is read per minute, so usage just before and just after the change is rated
    at its own rate, to the cent."""
    from billing.store import days_to_split, read_usage

    book = {
        "tenants": [{"tenant_id": "aurora-labs", "name": "Aurora Labs, Inc."}],
        "contracts": [
            {
                "contract_id": "AUR-9",
                "tenant_id": "aurora-labs",
                "currency": "USD",
                "term": {"start": "2026-10-01", "end": "2026-11-01"},
                "committed_gpus": 0,
                "payment_terms_days": 30,
                "minimum_monthly_commitment": "0",
                "rates": [
                    {"sku": "H100", "rate_per_gpu_hour": "2.00"},
                    {
                        "sku": "H100",
                        "rate_per_gpu_hour": "3.00",
                        "effective_from": "2026-10-16T06:30:00Z",
                    },
                ],
            }
        ],
    }
    parsed = parse_contract_book(book)
    store_contracts(warehouse, parsed, "test", clock=lambda: NOW)
    _pipeline_closed_before(warehouse, "2026-11-01 00:10:00")
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-10-02 00:00:00", 10 * H)
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-10-16 06:29:00", 1 * H)
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-10-16 06:30:00", 2 * H)
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-10-20 00:00:00", 4 * H)
    october = Period.parse("2026-10")
    split = days_to_split(parsed.contracts, october)
    assert split == {int(_at("2026-10-16 00:00:00").timestamp()) * 1_000_000}
    # Day rows everywhere but the 16th, which comes per minute.
    rows = read_usage(warehouse, "aurora-labs", october, split)
    assert [(r.window_start_us // 1_000_000, r.allocated_us) for r in rows] == [
        (int(_at(t).timestamp()), q)
        for t, q in (
            ("2026-10-02 00:00:00", 10 * H),
            ("2026-10-16 06:29:00", 1 * H),
            ("2026-10-16 06:30:00", 2 * H),
            ("2026-10-20 00:00:00", 4 * H),
        )
    ]
    _, statement = _issue(warehouse, "2026-10", tmp_path)
    assert _lines(statement) == [
        ("usage", "2026-10", "H100", "sc1", 11 * H, "22.00"),  # 11 GPU-h at 2.00
        ("usage", "2026-10", "H100", "sc1", 6 * H, "18.00"),  # 6 GPU-h at 3.00
    ]


def test_a_statement_an_accounts_payable_team_can_book_computed_by_hand_in_yen_and_dollars(
    warehouse, tmp_path
):
    """Issuer, number, issue and due dates, tax on the subtotal, the prorated minimum and
    labelled prior-period adjustments, every figure computed here by hand, in a 0-decimal
    (JPY) and a 2-decimal (USD) currency, in the JSON, the CSV and the HTML."""
    import csv
    import io

    book = {
        "tenants": [
            {"tenant_id": "aurora-labs", "name": "Aurora Labs, Inc."},
            {"tenant_id": "kaze-ai", "name": "Kaze AI K.K."},
        ],
        "contracts": [
            {
                "contract_id": "AUR-USD",
                "tenant_id": "aurora-labs",
                "currency": "USD",
                "term": {"start": "2026-09-01", "end": "2027-09-01"},
                "committed_gpus": 1,
                "minimum_monthly_commitment": "1000.00",
                "payment_terms_days": 45,
                "tax": {"label": "VAT 17.5%", "rate": "0.175"},
                "rates": [{"sku": "H100", "rate_per_gpu_hour": "2.45"}],
            },
            {
                "contract_id": "KAZE-JPY",
                "tenant_id": "kaze-ai",
                "currency": "JPY",
                "term": {"start": "2026-10-11", "end": "2027-10-11"},
                "committed_gpus": 1,
                "minimum_monthly_commitment": "310000",
                "payment_terms_days": 30,
                "tax": {"label": "Consumption tax 8%", "rate": "0.08"},
                "rates": [{"sku": "H100", "rate_per_gpu_hour": "1000"}],
            },
        ],
    }
    _pipeline_closed_before(warehouse, "2026-12-01 00:00:00")
    store_contracts(warehouse, parse_contract_book(book), "test", clock=lambda: NOW)
    # September: 400 GPU-h → 980.00, true-up to the 1,000.00 minimum 20.00; 17.5 % VAT of
    # the 1,000.00 subtotal 175.00. Issued 5 October: the first number, due 45 days later.
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-09-10 00:00:00", 400 * H)
    september = _issue_at(warehouse, "2026-09", tmp_path, datetime(2026, 10, 5, 9, tzinfo=UTC))
    assert (september["statement_number"], september["issue_date"], september["due_date"]) == (
        "SC-000001",
        "2026-10-05",
        "2026-11-19",
    )
    assert september["totals"]["subtotal"] == "1000.00"
    assert september["taxes"] == [
        {
            "contract_id": "AUR-USD",
            "label": "VAT 17.5%",
            "rate": "0.175",
            "taxable": "1000.00",
            "amount": "175.00",
        }
    ]
    assert september["totals"]["total"] == "1175.00"
    assert september["issuer"] == {
        "legal_name": "Supercluster Cloud, Inc.",
        "address": ["1 Test Way", "Testville"],
        "tax_id": "EIN 00-0000000",
        "contact": "",
    }

    # Late September usage, 10 GPU-h: on October's statement as labelled adjustments of the
    # September statement: GPU time +24.50, the true-up it no longer needs -20.00.
    _late_usage(warehouse, "aurora-labs", "H100", "sc1", "2026-09-20 00:00:00", 10 * H)
    # October: 500 GPU-h and 1 µs → 1,225.00 (the µs is 0.0000000007 USD), above the
    # minimum. Subtotal 1,225.00 + 24.50 - 20.00 = 1,229.50; VAT 17.5 % = 215.1625 → 215.16.
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-10-02 00:00:00", 500 * H + 1)
    # Kaze, from 11 October: 21 of October's 31 days, so the 310,000 minimum is prorated
    # to 210,000. 250.0125 GPU-h at 1,000 → 250,012.5 → 250,013 (half up); no true-up;
    # 8 % tax of 250,013 = 20,001.04 → 20,001; total 270,014.
    _usage(warehouse, "kaze-ai", "H100", "sc1", "2026-10-20 00:00:00", 900_045_000_000)
    issued_on = datetime(2026, 11, 3, 8, tzinfo=UTC)
    outcomes = run_statements(
        warehouse, "2026-10", tmp_path, clock=lambda: issued_on, issuer=ISSUER
    )
    assert [(o.tenant_id, o.status) for o in outcomes] == [
        ("aurora-labs", "issued"),
        ("kaze-ai", "issued"),
    ]
    usd, jpy = (json.loads(o.files[0].read_bytes())["statement"] for o in outcomes)

    assert (usd["statement_number"], usd["issue_date"], usd["due_date"]) == (
        "SC-000002",
        "2026-11-03",
        "2026-12-18",
    )
    assert _lines(usd) == [
        ("usage", "2026-10", "H100", "sc1", 500 * H + 1, "1225.00"),
        ("usage", "2026-09", "H100", "sc1", 10 * H, "24.50"),
        ("commitment_true_up", "2026-09", "", "", 0, "-20.00"),
    ]
    assert usd["adjusts"] == {"2026-09": "aurora-labs-2026-09"}
    assert usd["taxes"] == [
        {
            "contract_id": "AUR-USD",
            "label": "VAT 17.5%",
            "rate": "0.175",
            "taxable": "1229.50",
            "amount": "215.16",
        }
    ]
    assert usd["totals"] == {
        "usage": "1225.00",
        "energy": "0.00",
        "commitment_true_up": "0.00",
        "sla_credits": "0.00",
        "prior_period_adjustments": "4.50",
        "subtotal": "1229.50",
        "tax": "215.16",
        "total": "1444.66",
    }

    assert (jpy["statement_number"], jpy["issue_date"], jpy["due_date"]) == (
        "SC-000003",
        "2026-11-03",
        "2026-12-03",
    )
    assert _lines(jpy) == [("usage", "2026-10", "H100", "sc1", 900_045_000_000, "250013")]
    (minimum,) = jpy["minimum_commitments"]
    assert (minimum["monthly"], minimum["prorated"], minimum["true_up"]) == (
        "310000",
        "210000",
        "0",
    )
    assert (minimum["covered_from"], minimum["covered_to"]) == (
        "2026-10-11T00:00:00Z",
        "2026-11-01T00:00:00Z",
    )
    assert jpy["taxes"] == [
        {
            "contract_id": "KAZE-JPY",
            "label": "Consumption tax 8%",
            "rate": "0.08",
            "taxable": "250013",
            "amount": "20001",
        }
    ]
    assert (jpy["totals"]["subtotal"], jpy["totals"]["tax"], jpy["totals"]["total"]) == (
        "250013",
        "20001",
        "270014",
    )
    assert warehouse.execute(
        "SELECT statement_number, total FROM issued_statements ORDER BY statement_number"
    ) == [
        ("SC-000001", Decimal("1175")),
        ("SC-000002", Decimal("1444.66")),
        ("SC-000003", Decimal("270014")),
    ]

    # The CSV: every row carries the number, the dates and the issuer; the adjustments name
    # the statement they adjust; subtotal, tax and total close it.
    rows = list(csv.DictReader(io.StringIO(outcomes[0].files[1].read_text())))
    heading = {
        (r["statement_number"], r["issue_date"], r["due_date"], r["issuer_tax_id"]) for r in rows
    }
    assert heading == {("SC-000002", "2026-11-03", "2026-12-18", "EIN 00-0000000")}
    assert [(r["section"], r["kind"], r["amount"]) for r in rows] == [
        ("GPU time", "usage", "1225.00"),
        ("Adjustment for 2026-09 of statement aurora-labs-2026-09", "usage", "24.50"),
        ("Adjustment for 2026-09 of statement aurora-labs-2026-09", "commitment_true_up", "-20.00"),
        ("Subtotal", "subtotal", "1229.50"),
        ("Tax: VAT 17.5%", "tax", "215.16"),
        ("Total", "total", "1444.66"),
    ]
    # The HTML, for people: the same facts.
    html = outcomes[1].files[2].read_text()
    for text in (
        "Supercluster Cloud, Inc.",
        "Tax id EIN 00-0000000",
        "<b>SC-000003</b>",
        "Issued</td><td>2026-11-03",
        "<b>2026-12-03</b> (net 30 days)",
        "Consumption tax 8% on 250,013 JPY (contract KAZE-JPY)",
        "20,001 JPY",
        "270,014 JPY",
        "210,000 JPY",
    ):
        assert text in html, text

    # Drawn by a real browser: the issued statements and a draft of November, each as a
    # screenshot (test-artifacts/) and the DOM Chromium built.
    _usage(warehouse, "aurora-labs", "H100", "sc1", "2026-11-05 00:00:00", 20 * H)
    (draft,) = draft_statements(
        warehouse, "2026-11", tmp_path, "aurora-labs", clock=lambda: issued_on, issuer=ISSUER
    )
    pages = [
        (outcomes[0].files[2], "1,444.66 USD"),
        (outcomes[1].files[2], "270,014 JPY"),
        (draft.files[2], "DRAFT as of"),
    ]
    for page, expected in pages:
        _, dom = render(page)
        assert expected in dom and "Supercluster Cloud, Inc." in dom and "<svg" in dom
    assert "Adjustment for 2026-09 of statement aurora-labs-2026-09" in render(pages[0][0])[1]


def test_an_earlier_month_is_re_rated_only_when_its_usage_or_contracts_changed(
    billed, tmp_path, monkeypatch
):
    """Issuing must not grow with the months issued before: each statement records what it
    rated per month (rated_inputs), and a later one re-reads an earlier month only when
    that month's usage or contracts have changed since; its adjustment still comes once."""
    from billing import issue

    wh = billed
    reread: list[list[str]] = []
    real = issue.read_periods_to_rate

    def spy(warehouse, book, tenant_id, periods):
        reread.append([p.label for p in periods])
        return real(warehouse, book, tenant_id, periods)

    monkeypatch.setattr(issue, "read_periods_to_rate", spy)
    _issue(wh, "2026-09", tmp_path)
    _usage(wh, "aurora-labs", "H100", "sc1", "2026-10-10 12:00:00", 100 * H)
    _, october = _issue(wh, "2026-10", tmp_path)
    assert reread == [[], []]  # September unchanged since its own statement rated it
    assert [ln for ln in _lines(october) if ln[1] == "2026-09"] == []

    _late_usage(wh, "aurora-labs", "H100", "sc1", "2026-09-21 00:00:00", 120 * H)
    december_2 = datetime(2026, 12, 2, tzinfo=UTC)
    november = _issue_at(wh, "2026-11", tmp_path, december_2, force=True)
    assert reread[-1] == ["2026-09"]  # only the month that changed
    assert [ln for ln in _lines(november) if ln[1] != "2026-11"] == [
        ("usage", "2026-09", "H100", "sc1", 120 * H, "300.00"),
        ("commitment_true_up", "2026-09", "", "", 0, "-250.00"),
    ]
    # Issued again: compared with what the statements before November had billed, so
    # September is re-read, and nothing has changed. A contract reloaded with another rate
    # makes every month it covers be re-rated.
    (again,) = run_statements(
        wh, "2026-11", tmp_path, "aurora-labs", clock=lambda: december_2, issuer=ISSUER
    )
    assert again.status == "already issued" and reread[-1] == ["2026-09"]
    book = json.loads(json.dumps(CONTRACTS))
    book["contracts"][0]["rates"][0]["rate_per_gpu_hour"] = "2.60"
    store_contracts(wh, parse_contract_book(book), "test", clock=lambda: NOW)
    (changed,) = run_statements(
        wh, "2026-11", tmp_path, "aurora-labs", clock=lambda: december_2, issuer=ISSUER
    )
    assert changed.status == "already issued, data changed"
    assert reread[-1] == ["2026-09", "2026-10"]
