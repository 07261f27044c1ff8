"""``meter bench portal``: the portal's pages and API timed on the finance benchmark's
history (bench/history.py, the default shape of ``meter bench finance``: 3 months, 20
tenants, 4 SKUs, 2 clusters, 8 partitions), with October issued and November drafted.

``meter portal serve`` runs as the finance user; each page is requested in turn for every
tenant with its own token, over one keep-alive connection, and timed from request to the
last byte. The baseline is the cheapest authenticated request (``/api/v1/freshness``:
the token's lookup and one small query), timed in the same run.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import history
from bench.e2e import say
from bench.finance import Server, prepare, settle_merges
from billing.issue import run_statements
from billing.issuer import load_issuer_file
from core.errors import ConfigError
from meter.demo import ISSUER_EXAMPLE
from portal.drafts import draw
from portal.serve import wait_until_serving
from portal.tokens import TENANT, TokenBook
from stack import LocalStack
from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER
from warehouse.client import Warehouse

ISSUED, DRAFTED = "2026-10", "2026-11"
NOW = datetime(2026, 11, 20, tzinfo=UTC)


def _pages(tenant: str) -> dict[str, str]:
    api = f"/api/v1/tenants/{tenant}"
    return {
        "page_overview": f"/tenants/{tenant}?month={ISSUED}",
        "page_draft": f"/tenants/{tenant}/draft?month={DRAFTED}",
        "page_statement": f"/tenants/{tenant}/statements/{ISSUED}",
        "api_usage": f"{api}/usage?month={ISSUED}",
        "api_position": f"{api}/position?month={ISSUED}",
        "api_statements": f"{api}/statements",
        "api_statement_csv": f"{api}/statements/{ISSUED}/statement.csv",
        "api_gaps": f"{api}/gaps",
        "baseline_freshness": "/api/v1/freshness",
    }


def _figures(times: list[float]) -> dict[str, Any]:
    ordered = sorted(times)
    return {
        "requests": len(ordered),
        "p50_s": round(statistics.median(ordered), 4),
        "p99_s": round(ordered[min(int(0.99 * len(ordered)), len(ordered) - 1)], 4),
        "max_s": round(ordered[-1], 4),
    }


def run_portal_bench(
    shape: history.Shape, rounds: int, folder: Path | None, reuse: str = "", keep: bool = False
) -> dict[str, Any]:
    """``reuse``: a database this bench built before in ``folder`` (kept with ``--keep``):
    its history, statements and drafts are timed again without the half hour of building."""
    folder = folder or Path(tempfile.mkdtemp(prefix="meter-portal-"))
    stack = LocalStack(folder / "stack")
    info = stack.up()
    database = reuse or f"portal_{uuid.uuid4().hex[:6]}"
    process = None
    try:
        warehouse = Warehouse(info.settings(database))
        if reuse:
            issued = warehouse.execute("SELECT count() FROM issued_statements")[0][0]
            if issued != shape.tenants:
                raise ConfigError(
                    f"database {reuse!r} holds {issued} issued statements, "
                    f"not one per tenant of the shape ({shape.tenants})"
                )
        else:
            _build(info, stack, warehouse, database, shape, folder)
        book = TokenBook(warehouse)
        now_us = time.time_ns() // 1000
        tokens = {t: book.issue(TENANT, t, 3600, "bench", now_us) for t in shape.tenant_ids}
        port = _free_port()
        finance = (
            f"clickhouse://{FINANCE_USER}:{FINANCE_PASSWORD}@127.0.0.1:"
            f"{info.clickhouse_port}/{database}?http_port={info.clickhouse_http_port}"
        )
        process = spawn_portal(finance, port, folder / "portal.log")
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, lambda: process.poll() is None)
        times: dict[str, list[float]] = {}
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # kept alive
        try:
            for tenant, token in tokens.items():  # once untimed: connections, caches
                for path in _pages(tenant).values():
                    _get(client, path, token)
            say(f"timing {len(_pages('x'))} pages × {shape.tenants} tenants × {rounds} rounds")
            for _ in range(rounds):
                for tenant, token in tokens.items():
                    for name, path in _pages(tenant).items():
                        started = time.perf_counter()
                        _get(client, path, token)
                        times.setdefault(name, []).append(time.perf_counter() - started)
        finally:
            client.close()
        result: dict[str, Any] = {
            "shape": shape.__dict__,
            "pages": {name: _figures(t) for name, t in times.items()},
        }
        base = result["pages"]["baseline_freshness"]["p99_s"]
        worst = max(v["p99_s"] for k, v in result["pages"].items() if k != "baseline_freshness")
        result["worst_p99_s"] = worst
        result["ratio_worst_p99_to_baseline"] = round(worst / base, 1) if base else None
        if not keep:
            warehouse.drop_database()
        warehouse.close()
        return result
    finally:
        if process is not None:
            process.terminate()
            process.wait(15)
        stack.down()


def _build(
    info: Any,
    stack: LocalStack,
    warehouse: Warehouse,
    database: str,
    shape: history.Shape,
    folder: Path,
) -> None:
    warehouse.ensure_database()
    stack.allow_finance(database)
    say(f"building {shape.months} month(s) of history for {shape.tenants} tenants")
    prepare(
        Server(info.clickhouse_http_port, database, password=info.clickhouse_password),
        database,
        shape,
        warehouse,
    )
    settle_merges(warehouse)
    issuer = load_issuer_file(ISSUER_EXAMPLE)
    say(f"issuing {ISSUED}, drawing {DRAFTED}")
    outcomes = run_statements(
        warehouse, ISSUED, folder / "statements", clock=lambda: NOW, issuer=issuer
    )
    if not all(o.status == "issued" for o in outcomes):
        raise RuntimeError(f"statements refused: {outcomes}")
    draw(warehouse, DRAFTED, issuer, lambda: NOW)


def spawn_portal(clickhouse_url: str, port: int, log: Path) -> subprocess.Popen:
    """``meter portal serve`` as its own process (as an operator runs it), logging to
    ``log``; wait for it with portal.serve.wait_until_serving."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meter",
            "portal",
            "serve",
            "--port",
            str(port),
            "--clickhouse-url",
            clickhouse_url,
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _get(client: http.client.HTTPConnection, path: str, token: str) -> None:
    client.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    got = client.getresponse()
    body = got.read()  # to the last byte
    if got.status != 200:
        raise RuntimeError(f"{path}: {got.status} {body[:300]!r}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main_portal(args: Any) -> int:
    shape = history.Shape(args.months, args.tenants, args.skus, args.clusters, args.partitions)
    result = run_portal_bench(
        shape, args.rounds, Path(args.folder) if args.folder else None, args.reuse, args.keep
    )
    if args.json:
        print(json.dumps(result))
    else:
        for name, f in result["pages"].items():
            print(
                f"{name:<20} p50 {f['p50_s']:.4f} s  p99 {f['p99_s']:.4f} s  max {f['max_s']:.4f} s"
            )
    return 0
