"""A multi-tenant fleet metered twice from one event log, then billed and reconciled.

One topic, two workers in two consumer groups writing two databases: the statements of
both must be byte-identical. Every statement is checked for other tenants' identifiers and
numbers; the README's finance queries run as written in ``clickhouse-client`` as the
read-only user; ``meter reconcile`` passes, then fails on a removed ledger row and on an
open gap; the HTML statement is rendered by headless Chromium into a PNG artifact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from agent.fleet import FleetSpec
from billing.contracts import load_contract_file
from billing.issue import run_statements
from billing.issuer import Issuer
from billing.store import store_contracts
from meter.demo import CONTRACTS_EXAMPLE, DEMO_PERIOD, DEMO_START_US
from meter.runner import publish_fleet
from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER
from streams.host.settings import WorkerSettings
from streams.host.topics import ensure_topics
from tests.browser import render
from tests.e2e.harness import meter_backlog
from tests.mutations import mutate
from warehouse.client import Warehouse
from warehouse.migrate import migrate

ISSUER = Issuer("Supercluster Cloud, Inc.", ("1 Test Way", "Testville"), "EIN 00-0000000", "SC-")

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def _meter_into(stack, tmp: Path, name: str, topic: str, offsets, emitted):
    """A fresh database metered from ``topic`` by a worker of its own group, then billed."""
    warehouse = Warehouse(stack.settings(name))
    warehouse.drop_database()
    migrate(warehouse)
    settings = WorkerSettings(
        bootstrap=stack.bootstrap,
        topic=topic,
        app_id=f"meter-{name.replace('_', '-')}",
        partitions=4,
        clickhouse=warehouse.settings,
        datadir=tmp / name / "faust",
    )
    meter_backlog(settings, offsets, tmp / f"{name}.log", warehouse, emitted)
    store_contracts(warehouse, load_contract_file(CONTRACTS_EXAMPLE), "example", lambda: NOW)
    out = tmp / f"statements-{name}"
    # The fleet covers October's first half hour, and some tenants have no usage: issued
    # with force, as the demo does (the waiting itself: tests/integration/test_statements.py).
    outcomes = run_statements(
        warehouse, DEMO_PERIOD, out, clock=lambda: NOW, force=True, issuer=ISSUER
    )
    assert [o.status for o in outcomes] == ["issued"] * len(outcomes), outcomes
    return warehouse, out, outcomes


@pytest.fixture(scope="module")
def billed_twice(local_stack, tmp_path_factory):
    stack = local_stack.running()
    assert stack is not None
    tmp = tmp_path_factory.mktemp("billing")
    tag = os.urandom(3).hex()
    spec = replace(
        FleetSpec(nodes=24, reports_per_node=6, tenants=3, seed=11), start_us=DEMO_START_US
    )
    topic = f"usage-billing-{tag}"
    ensure_topics(stack.bootstrap, {topic: 4, f"{topic}.dlq": 1})
    emitted, offsets = publish_fleet(spec, stack.bootstrap, topic)
    first = _meter_into(stack, tmp, f"bill_a_{tag}", topic, offsets, emitted)
    second = _meter_into(stack, tmp, f"bill_b_{tag}", topic, offsets, emitted)
    yield stack, first, second
    for warehouse, _, _ in (first, second):
        warehouse.drop_database()


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_two_runs_over_one_event_log_give_byte_identical_statements(billed_twice):
    _, (_, out_a, outcomes_a), (_, out_b, outcomes_b) = billed_twice
    files_a, files_b = _files(out_a), _files(out_b)
    assert len(files_a) == 3 * len(outcomes_a) >= 3 * 8
    assert files_a == files_b
    assert [o.digest_sha256 for o in outcomes_a] == [o.digest_sha256 for o in outcomes_b]


def _numbers(statement: dict) -> set[str]:
    found = {ln["amount"] for ln in statement["lines"]} | set(statement["totals"].values())
    found |= {str(ln["quantity"]) for ln in statement["lines"]}
    found |= {str(v) for v in statement["usage_summary"].values()}
    return {n for n in found if len(n.replace("-", "").replace(".", "")) >= 4}


def test_a_tenants_statement_holds_no_other_tenants_identifiers_or_numbers(billed_twice):
    _, (warehouse, out, outcomes), _ = billed_twice
    book = load_contract_file(CONTRACTS_EXAMPLE)
    docs = {o.tenant_id: json.loads(o.files[0].read_bytes())["statement"] for o in outcomes}
    used = [t for t, d in docs.items() if d["usage_summary"]["allocated_us"] > 0]
    assert len(used) == 3, "the fleet's three tenants have usage"
    # Conservation: each statement's quantities are exactly that tenant's rollups.
    for tenant, doc in docs.items():
        ((allocated, unhealthy),) = warehouse.execute(
            "SELECT sum(allocated_us), sum(unhealthy_us) FROM usage_by_minute "
            "WHERE tenant_id = %(t)s",
            {"t": tenant},
        )
        assert (doc["usage_summary"]["allocated_us"], doc["usage_summary"]["unhealthy_us"]) == (
            allocated,
            unhealthy,
        )
        billed = sum(ln["quantity"] for ln in doc["lines"] if ln["kind"] == "usage")
        assert billed == allocated
    for tenant, doc in docs.items():
        mine = _numbers(doc)
        texts = [p.read_text() for p in (out / tenant).iterdir()]
        assert len(texts) == 3
        for other in book.tenants:
            if other.tenant_id == tenant:
                continue
            theirs = [c.contract_id for c in book.contracts if c.tenant_id == other.tenant_id]
            for text in texts:
                assert other.tenant_id not in text and other.name not in text
                assert all(cid not in text for cid in theirs)
                leaked = {n for n in _numbers(docs[other.tenant_id]) - mine if n in text}
                assert not leaked, f"{tenant}'s statement shows {other.tenant_id}'s {leaked}"


def _finance_queries() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## For finance", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_the_readme_finance_queries_run_as_written_in_clickhouse_client(local_stack, billed_twice):
    stack, (warehouse, _, _), _ = billed_twice
    local_stack.allow_finance(warehouse.settings.database)
    queries = _finance_queries()
    assert len(queries) >= 8
    client = shutil.which("clickhouse-client")
    assert client, "clickhouse-client is missing: apt-get install -y clickhouse-client"
    rows_seen = {}
    for sql in queries:
        done = subprocess.run(
            [
                client,
                "--host",
                "127.0.0.1",
                "--port",
                str(stack.clickhouse_port),
                "--user",
                FINANCE_USER,
                "--password",
                FINANCE_PASSWORD,
                "--database",
                warehouse.settings.database,
                "--multiquery",
            ],
            input=sql,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{sql}\n{done.stderr[-2000:]}"
        rows_seen[sql.split("FROM", 1)[1].split()[0]] = len(done.stdout.splitlines())
    for view in (
        "usage_by_day",
        "usage_by_hour",
        "contract_position_by_month",
        "issued_statements",
        "billed_by_period",
    ):
        assert rows_seen[view] > 0, f"{view} returned nothing on the demo data"


def _meter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meter", *args], capture_output=True, text=True, timeout=120
    )


def _url(stack, warehouse) -> str:
    return stack.clickhouse_url_for(warehouse.settings.database)


def test_html_statement_renders_in_headless_chromium(billed_twice):
    _, (_, _out, outcomes), _ = billed_twice
    outcome = outcomes[0]
    _, dom = render(next(p for p in outcome.files if p.suffix == ".html"))
    total = f"{Decimal(outcome.total):,} USD"
    assert "Total due" in dom and total in dom and "<svg" in dom


def test_reconcile_passes_then_names_a_removed_ledger_row_and_an_open_gap(billed_twice):
    stack, _, (warehouse, _, _) = billed_twice
    url = _url(stack, warehouse)
    ok = _meter("reconcile", "--period", DEMO_PERIOD, "--clickhouse-url", url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK   no open gaps" in ok.stdout and "every counter equal" in ok.stdout

    node, _boot, seq, tenant = warehouse.execute(
        "SELECT node_id, boot_id, seq, tenant_id FROM usage_ledger "
        "WHERE tenant_id != 'unallocated' ORDER BY node_id, seq LIMIT 1"
    )[0]
    mutate(
        warehouse,
        "ALTER TABLE usage_ledger_holdings DELETE WHERE node_id = %(n)s AND seq = %(s)s",
        {"n": node, "s": seq},
    )
    broken = _meter("reconcile", "--period", DEMO_PERIOD, "--clickhouse-url", url)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "FAIL" in broken.stdout and f"{tenant} " in broken.stdout
    assert "allocated_us ledger=" in broken.stdout

    warehouse.insert(
        "seq_gaps",
        (
            "node_id",
            "boot_id",
            "first_missing",
            "last_missing",
            "first_seen",
            "is_open",
            "source_partition",
            "version",
            "updated_at",
        ),
        [("sc1-node-09999", "b" * 36, 5, 7, NOW, 1, 0, 1, NOW)],
    )
    gap = _meter("reconcile", "--period", DEMO_PERIOD, "--clickhouse-url", url)
    assert gap.returncode == 1
    assert "node sc1-node-09999 boot bbbb" in gap.stdout and "seq 5..7 (3 reports)" in gap.stdout
