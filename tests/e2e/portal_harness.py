"""A warehouse with a known history for the portal's tests, and the portal served from
it by ``meter portal serve`` (a real process, as the finance user), with tokens issued
by ``meter portal token issue``.

The history (bench/history.py) is two months, September and October 2026, of three
tenants, two SKUs (one a MIG slice) and one cluster, with exact expected totals; October
is issued, November has a drawn draft, and the generator's three open gaps are on
sc1-node-0-0-*.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx

from bench import history
from bench.finance import Server
from bench.portal import spawn_portal
from billing.issue import run_statements
from billing.issuer import Issuer
from billing.store import store_contracts
from portal.drafts import draw
from portal.errors import PortalError
from portal.serve import wait_until_serving
from stack import LocalStack, StackInfo
from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER
from warehouse.client import Warehouse
from warehouse.migrate import migrate

SHAPE = history.Shape(months=2, tenants=3, skus=4, clusters=1, partitions=2)
ISSUED, DRAFTED = "2026-10", "2026-11"
NOW = datetime(2026, 11, 20, tzinfo=UTC)
ISSUER = Issuer("Supercluster Cloud, Inc.", ("1 Test Way", "Testville"), "EIN 00-0000000", "SC-")
ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def meter(
    *args: str, timeout_s: float = 60, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meter", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def build_history(local_stack: LocalStack, info: StackInfo, database: str, out: Path) -> Warehouse:
    warehouse = Warehouse(info.settings(database))
    warehouse.drop_database()
    migrate(warehouse)
    local_stack.allow_finance(database)
    # Over HTTP: the generator's INSERT … VALUES literals would wait for data blocks on the
    # native protocol.
    history.build(
        Server(info.clickhouse_http_port, database, password=info.clickhouse_password),
        SHAPE,
        lambda _: None,
    )
    store_contracts(warehouse, history.contract_book(SHAPE), "generated", clock=lambda: NOW)
    outcomes = run_statements(warehouse, ISSUED, out, clock=lambda: NOW, issuer=ISSUER)
    assert {o.status for o in outcomes} == {"issued"}, outcomes
    drafted = draw(warehouse, DRAFTED, ISSUER, lambda: NOW)
    assert all(total for _, total, _ in drafted), drafted
    return warehouse


@dataclass
class Portal:
    url: str
    process: subprocess.Popen
    log: Path
    clickhouse_url: str  # the pipeline user's, for the token commands
    tokens: dict[str, str] = field(default_factory=dict)

    def issue(self, *args: str) -> str:
        done = meter(
            "portal",
            "token",
            "issue",
            *args,
            "--public-url",
            self.url,
            "--clickhouse-url",
            self.clickhouse_url,
        )
        assert done.returncode == 0, done.stderr
        url = done.stdout.strip()
        assert url.startswith(f"{self.url}/login?token=mpt_"), url
        return url.split("token=", 1)[1]

    def get(self, path: str, token: str | None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def stop(self) -> float:
        """SIGTERM; how long it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=15)
        return time.monotonic() - started


def clickhouse_url(info: StackInfo, database: str, user: str = "", password: str = "") -> str:
    s = info.settings(database)
    who = f"{user or s.user}:{quote(password or s.password, safe='')}"
    return f"clickhouse://{who}@127.0.0.1:{s.port}/{database}?http_port={s.http_port}"


def start_portal(info: StackInfo, database: str, folder: Path) -> Portal:
    port = free_port()
    log = folder / "portal.log"
    finance = clickhouse_url(info, database, FINANCE_USER, FINANCE_PASSWORD)
    process = spawn_portal(finance, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, lambda: process.poll() is None)
    except PortalError:
        process.kill()
        raise AssertionError(log.read_text()) from None
    return Portal(url, process, log, clickhouse_url(info, database))
