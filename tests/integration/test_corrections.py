"""Audited corrections on the real server: usage re-attributed or voided in an issued month
moves exactly the selected GPU-µs (nothing created or lost), leaves the ledger and the
rollups as metered, appears once on each tenant's next statement labelled with the
correction, and is listed by reconcile beside metered and billed usage.

The fleet, written by the real processor and sink: node 1 runs two H100s for aurora-labs
on 2026-10-10 08:00–12:00 (8 GPU-h), node 2 one H100 for borealis-ai 08:00–10:00 (2 GPU-h).
Aurora pays 2.00 per GPU-hour, borealis 3.00.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing.contracts import parse_contract_book
from billing.correction_store import add_corrections
from billing.corrections import parse_corrections
from billing.errors import CorrectionError
from billing.issue import draft_statements, run_statements
from billing.reconcile import reconcile
from billing.store import store_contracts
from schemas import ReportCodec
from streams.contract import ProcessorSettings, SourceMessage
from streams.output.sink import WarehouseSink
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.state import PartitionState
from tests.browser import render
from tests.factories import TICK_US, make_report, make_sample
from tests.integration.test_statements import ISSUER
from warehouse.totals import ledger_totals, rollup_totals

pytestmark = pytest.mark.integration

H = 3_600_000_000
MINUTE_US = 60_000_000
START_US = 1_791_619_200_000_000  # 2026-10-10 08:00 UTC
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DECEMBER_2 = datetime(2026, 12, 2, tzinfo=UTC)
BOOK = {
    "tenants": [
        {"tenant_id": "aurora-labs", "name": "Aurora Labs, Inc."},
        {"tenant_id": "borealis-ai", "name": "Borealis AI Ltd."},
    ],
    "contracts": [
        {
            "contract_id": "AUR-1",
            "tenant_id": "aurora-labs",
            "currency": "USD",
            "term": {"start": "2026-01-01", "end": "2027-01-01"},
            "committed_gpus": 1,
            "payment_terms_days": 30,
            "minimum_monthly_commitment": "0",
            "rates": [{"sku": "H100", "rate_per_gpu_hour": "2.00"}],
        },
        {
            "contract_id": "BOR-1",
            "tenant_id": "borealis-ai",
            "currency": "USD",
            "term": {"start": "2026-01-01", "end": "2027-01-01"},
            "committed_gpus": 1,
            "payment_terms_days": 30,
            "minimum_monthly_commitment": "0",
            "rates": [{"sku": "H100", "rate_per_gpu_hour": "3.00"}],
        },
    ],
}
MOVE = {
    "correction_id": "COR-1",
    "kind": "reattribute",
    "tenant_id": "aurora-labs",
    "to_tenant_id": "borealis-ai",
    "node_id": "sc1-node-1",
    "start": "2026-10-10T09:00:00Z",
    "end": "2026-10-10T12:00:00Z",
    "author": "finance@cloud.example",
    "reason": "node 1 was lent to borealis for a test run",
    "ticket": "FIN-101",
}
VOID = {
    "correction_id": "COR-2",
    "kind": "void",
    "tenant_id": "borealis-ai",
    "node_id": "sc1-node-2",
    "start": "2026-10-10T08:00:00Z",
    "end": "2026-10-10T09:00:00Z",
    "author": "finance@cloud.example",
    "reason": "SLA breach: the hour is not billed",
    "ticket": "FIN-102",
}


def _fleet(warehouse) -> None:
    codec = ReportCodec()
    messages = []

    def report(node: str, tenant: str, gpus: int, minute: int, seq: int) -> None:
        at = START_US + minute * MINUTE_US
        samples = [
            make_sample(at + t * TICK_US, tenant_id=tenant, gpu_uuid=f"GPU-{node}-{g}", gpu_index=g)
            for t in range(6)
            for g in range(gpus)
        ]
        value = codec.encode(make_report(samples, seq=seq, node_id=node))
        messages.append(SourceMessage("usage", 0, len(messages), None, value, at + MINUTE_US))

    for minute in range(240):
        report("sc1-node-1", "aurora-labs", 2, minute, minute)
        if minute < 120:
            report("sc1-node-2", "borealis-ai", 1, minute, minute)
    # November: a minute of borealis, which closes October's windows.
    report("sc1-node-2", "borealis-ai", 1, (1_793_492_000_000_000 - START_US) // MINUTE_US, 120)
    processor = FastPartitionProcessor(
        PartitionState("usage", 0), ProcessorSettings(lateness_us=3 * MINUTE_US)
    )
    WarehouseSink(warehouse).write(processor.process(messages), processor.state)


def _issue(warehouse, period: str, out: Path, clock: datetime, force=False) -> dict:
    statements = {}
    for o in run_statements(
        warehouse, period, out, clock=lambda: clock, force=force, issuer=ISSUER
    ):
        assert o.status == "issued", (o.tenant_id, o.detail)
        statements[o.tenant_id] = json.loads(o.files[0].read_bytes())["statement"], o.files
    return statements


def _billable(warehouse) -> dict[str, tuple[int, int, int]]:
    rows = warehouse.execute(
        "SELECT tenant_id, metered_allocated_us, correction_allocated_us, allocated_us "
        "FROM billable_usage_by_month WHERE month = '2026-10-01' ORDER BY tenant_id"
    )
    return {t: (int(m), int(c), int(b)) for t, m, c, b in rows}


def _lines(statement: dict) -> list[tuple]:
    return [
        (ln["for_period"], ln.get("correction", ""), ln["quantity"], ln["amount"])
        for ln in statement["lines"]
    ]


@pytest.fixture
def fleet(warehouse):
    _fleet(warehouse)
    store_contracts(warehouse, parse_contract_book(BOOK), "test", clock=lambda: NOW)
    return warehouse


def test_a_reattribution_moves_exactly_its_usage_and_is_billed_once_on_each_side(fleet, tmp_path):
    wh = fleet
    october = _issue(wh, "2026-10", tmp_path, NOW)
    assert _lines(october["aurora-labs"][0]) == [("2026-10", "", 8 * H, "16.00")]
    assert _lines(october["borealis-ai"][0]) == [("2026-10", "", 2 * H, "6.00")]
    ledger, rollups = ledger_totals(wh), rollup_totals(wh)

    (added,) = add_corrections(wh, parse_corrections({"corrections": [MOVE]}))
    assert (added.samples, added.allocated_us) == (180 * 6 * 2, 6 * H)  # 3 h of two GPUs
    # Moved, not created or lost: aurora -6 GPU-h, borealis +6, the total unchanged.
    assert _billable(wh) == {
        "aurora-labs": (8 * H, -6 * H, 2 * H),
        "borealis-ai": (2 * H, 6 * H, 8 * H),
    }
    assert sum(b for *_, b in _billable(wh).values()) == 10 * H
    positions = dict(
        wh.execute(
            "SELECT tenant_id, allocated_us FROM contract_position_by_month "
            "WHERE month = '2026-10-01'"
        )
    )
    assert positions == {"aurora-labs": 2 * H, "borealis-ai": 8 * H}
    # The ledger and the rollups stay as metered.
    assert ledger_totals(wh) == ledger and rollup_totals(wh) == rollups

    text = "\n".join(reconcile(wh, "2026-10").lines)
    assert "COR-1 reattribute by finance@cloud.example (ticket FIN-101" in text
    assert "aurora-labs -6.000000, borealis-ai +6.000000 GPU-h" in text
    assert (
        "aurora-labs: metered 8.000000, corrections -6.000000, billable 2.000000, billed "
        "8.000000 GPU-h: not yet billed in full"
    ) in text

    # Once, on each tenant's next statement, labelled with the correction.
    november = _issue(wh, "2026-11", tmp_path, DECEMBER_2, force=True)
    assert _lines(november["aurora-labs"][0]) == [("2026-10", "COR-1", -6 * H, "-12.00")]
    assert ("2026-10", "COR-1", 6 * H, "18.00") in _lines(november["borealis-ai"][0])
    aurora = november["aurora-labs"][0]
    assert aurora["corrections"][0]["ticket"] == "FIN-101"
    assert aurora["corrections"][0]["allocated_us"] == -6 * H
    assert aurora["adjusts"] == {"2026-10": "aurora-labs-2026-10"}
    text = "\n".join(reconcile(wh, "2026-10").lines)
    assert (
        "aurora-labs: metered 8.000000, corrections -6.000000, billable 2.000000, billed "
        "2.000000 GPU-h: billed"
    ) in text
    for outcome in draft_statements(
        wh, "2026-12", tmp_path, clock=lambda: DECEMBER_2, issuer=ISSUER
    ):
        december = json.loads(outcome.files[0].read_bytes())["statement"]
        assert [ln for ln in _lines(december) if ln[0] == "2026-10"] == []

    # Void: borealis's first hour on node 2 is billed to nobody; shown the same way.
    add_corrections(wh, parse_corrections({"corrections": [VOID]}))
    assert _billable(wh)["borealis-ai"] == (2 * H, 5 * H, 7 * H)
    text = "\n".join(reconcile(wh, "2026-10").lines)
    assert "COR-2 void by finance@cloud.example (ticket FIN-102" in text
    (draft,) = [
        o
        for o in draft_statements(
            wh, "2026-12", tmp_path, "borealis-ai", clock=lambda: DECEMBER_2, issuer=ISSUER
        )
    ]
    december = json.loads(draft.files[0].read_bytes())["statement"]
    assert [ln for ln in _lines(december) if ln[0] == "2026-10"] == [
        ("2026-10", "COR-2", -1 * H, "-3.00")
    ]
    # The page a tenant gets: the correction line, and who made it and why.
    page = november["aurora-labs"][1][2]
    _, dom = render(page, "statement-with-a-correction")
    assert "Correction COR-1: adjustment for 2026-10 of statement aurora-labs-2026-10" in dom
    assert "node 1 was lent to borealis for a test run" in dom and "FIN-101" in dom


def test_a_correction_is_refused_whole_when_it_is_wrong(fleet, tmp_path):
    wh = fleet
    add_corrections(wh, parse_corrections({"corrections": [MOVE]}))
    again = {**MOVE, "correction_id": "COR-9", "node_id": ""}
    cases = [
        ({**MOVE}, "already used"),
        (again, "overlaps COR-1"),
        ({**VOID, "tenant_id": "cinder-research"}, "selects no metered usage"),
        ({**VOID, "end": "2026-11-02T00:00:00Z"}, "has not closed every window"),
    ]
    for doc, message in cases:
        with pytest.raises(CorrectionError, match=message):
            add_corrections(wh, parse_corrections({"corrections": [doc]}))
    for doc, message in [
        ({**MOVE, "ticket": ""}, "missing ticket"),
        ({**MOVE, "to_tenant_id": ""}, "names to_tenant_id"),
        ({**MOVE, "start": "2026-10-10T09:00:30Z"}, "whole minute"),
        ({**VOID, "kind": "refund"}, "must be one of"),
    ]:
        with pytest.raises(CorrectionError, match=message):
            parse_corrections({"corrections": [doc]})
    assert [r[0] for r in wh.execute("SELECT correction_id FROM corrections")] == ["COR-1"]


def test_meter_corrections_add_and_list_from_a_file(fleet, stack, tmp_path):
    wh = fleet
    path = tmp_path / "corrections.json"
    path.write_text(json.dumps({"corrections": [MOVE]}))
    url = stack.clickhouse_url_for(wh.settings.database)

    def meter(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "meter", "corrections", *args, "--clickhouse-url", url],
            capture_output=True,
            text=True,
            timeout=120,
        )

    dry = meter("add", str(path), "--dry-run")
    assert (
        dry.returncode == 0
        and "would record COR-1" in dry.stdout
        and "6.000000 GPU-h" in dry.stdout
    )
    assert wh.execute("SELECT count() FROM corrections") == [(0,)]
    done = meter("add", str(path))
    assert done.returncode == 0 and "recorded COR-1" in done.stdout
    listed = meter("list", "--period", "2026-10")
    assert "COR-1 reattribute tenant aurora-labs, node sc1-node-1" in listed.stdout
    assert "ticket FIN-101" in listed.stdout
    refused = meter("add", str(path))
    assert refused.returncode == 2 and "already used" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
