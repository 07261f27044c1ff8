"""Every mistake an operator can make, run as the ``meter`` command against the real local
stack: one line on stderr naming the problem and the fix, exit status 2, no traceback,
nothing half-written, and a bounded wait where a server is unreachable."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER

pytestmark = pytest.mark.integration

UNREACHABLE_CH = "clickhouse://127.0.0.1:1/gpu_meter"


def _meter(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meter", *args], capture_output=True, text=True, timeout=timeout_s
    )


def _one_line(done: subprocess.CompletedProcess, expected: str) -> str:
    """The failure's line, after checking it is the only one (log lines aside)."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    said = [ln for ln in done.stderr.splitlines() if ln.startswith("meter")]
    assert len(said) == 1, done.stderr
    assert expected in said[0], said[0]
    return said[0]


def _databases(stack) -> set[str]:
    from warehouse.client import Warehouse

    warehouse = Warehouse(stack.settings("default"))
    try:
        return {name for (name,) in warehouse.execute("SHOW DATABASES")}
    finally:
        warehouse.close()


def test_server_mistakes_name_the_problem_and_write_nothing(stack, local_stack, warehouse):
    port = stack.clickhouse_port
    before = _databases(stack)
    url = stack.clickhouse_url_for("nosuchdb_typo")
    _one_line(_meter("status", "--clickhouse-url", url), "run `meter migrate`")
    _one_line(
        _meter("migrate", "--clickhouse-url", f"clickhouse://default:wrong@127.0.0.1:{port}/x"),
        "ClickHouse refused the login",
    )
    _one_line(
        _meter(
            "migrate",
            "--give-up-after-s",
            "2",
            "--clickhouse-url",
            f"clickhouse://{FINANCE_USER}:{FINANCE_PASSWORD}@127.0.0.1:{port}/typo_db",
        ),
        "closed the connection at login for 2 s: is user 'finance' allowed database",
    )
    # finance on a database it may read: refused the write, by the server's code
    local_stack.allow_finance(warehouse.settings.database)
    _one_line(
        _meter(
            "contracts",
            "load",
            "billing/contracts.example.json",
            "--clickhouse-url",
            f"clickhouse://{FINANCE_USER}:{FINANCE_PASSWORD}@127.0.0.1:{port}/"
            f"{warehouse.settings.database}",
        ),
        "not a read-only one such as finance",
    )
    _one_line(
        _meter("reconcile", "--period", "2026-10", "--clickhouse-url", url),
        "run `meter migrate`",
    )
    assert _databases(stack) == before  # no database made by a typo


def test_edge_mistakes_are_refused_before_anything_runs(tmp_path):
    cases = [
        (
            ("status", "--clickhouse-url", "clickhouse://127.0.0.1:70000/x"),
            "the port is not 1–65535",
        ),
        (
            ("status", "--clickhouse-url", UNREACHABLE_CH, "--metrics-url", "127.0.0.1:9108"),
            "must be a URL such as http://",
        ),
        (("verify-statement", str(tmp_path / "missing.json")), "No such file or directory"),
        (("verify-statement", str(tmp_path)), "Is a directory"),
        (
            ("fleet", "--topic", "gpu usage", "--bootstrap", "127.0.0.1:1"),
            "'gpu usage' is not a Kafka topic name",
        ),
        (
            ("statements", "--period", "2026-10", "--clickhouse-url", UNREACHABLE_CH),
            "pass --issuer FILE",
        ),
        (
            (
                "reconcile",
                "--period",
                "2026-10",
                "--clickhouse-url",
                UNREACHABLE_CH,
                "--give-up-after-s",
                "0",
            ),
            "--give-up-after-s 0.0 must be above 0",
        ),
        # once ran no engine and said every answer was exact
        (("bench", "finance", "--engines", "clickhouse"), "give server, chdb or both"),
    ]
    for args, expected in cases:
        _one_line(_meter(*args), expected)
    # argparse's own refusals: exit 2 too, naming the flag
    bad_level = _meter("status", "--log-level", "verbose")
    assert bad_level.returncode == 2 and "invalid choice: 'VERBOSE'" in bad_level.stderr


def test_an_unreachable_server_is_waited_for_a_bounded_time(tmp_path):
    contracts = "billing/contracts.example.json"
    for args in (
        ("status",),
        ("migrate",),
        ("contracts", "load", contracts),
        ("reconcile", "--period", "2026-10"),
    ):
        started = time.monotonic()
        done = _meter(*args, "--clickhouse-url", UNREACHABLE_CH, "--give-up-after-s", "1.5")
        _one_line(done, "cannot reach ClickHouse at 127.0.0.1:1 for 1.5 s")
        assert time.monotonic() - started < 15, args
    done = _meter(
        "status",
        "--clickhouse-url",
        UNREACHABLE_CH,
        "--give-up-after-s",
        "1",
        "--metrics-url",
        "http://127.0.0.1:1/metrics",
    )
    _one_line(done, "cannot reach ClickHouse")


def test_worker_metrics_that_cannot_be_read_are_named(stack, warehouse):
    url = stack.clickhouse_url_for(warehouse.settings.database)
    done = _meter("status", "--clickhouse-url", url, "--metrics-url", "http://127.0.0.1:1/metrics")
    _one_line(done, "cannot read worker metrics at http://127.0.0.1:1/metrics")


def test_a_reader_that_leaves_early_ends_the_command_quietly(stack, warehouse, tmp_path):
    """`meter stack status | head -1`: the reader has gone before meter writes."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    url = stack.clickhouse_url_for(warehouse.settings.database)
    for args in (
        ("stack", "status", "--stack-dir", str(tmp_path)),
        ("status", "--clickhouse-url", url, "--json"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "meter", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
        assert done.returncode in (0, 1), done.returncode
    os.close(write_end)


def test_a_worker_refuses_a_clickhouse_it_cannot_use_before_joining_its_group(stack, unique_name):
    port, http = stack.clickhouse_port, stack.clickhouse_http_port
    worker = ("worker", "--bootstrap", stack.bootstrap, "--give-up-after-s", "2")
    # The stack's URL without ?http_port=: the ledger's port would be 8123, not listening.
    base = f"clickhouse://default:{stack.clickhouse_password}@127.0.0.1:{port}/default"
    _one_line(_meter(*worker, "--clickhouse-url", base), "does not answer")
    _one_line(
        _meter(*worker, "--clickhouse-url", f"{base}?http_port={port}"),
        "is not ClickHouse's HTTP port",
    )
    url = f"{base}?http_port={http}"
    _one_line(_meter(*worker, "--clickhouse-url", url), "is missing migrations 0001, 0002")
    _one_line(
        _meter(*worker, "--clickhouse-url", url.replace("/default?", f"/{unique_name}x?")),
        "run `meter migrate`",
    )


def test_the_demo_refuses_to_drop_a_database_it_did_not_make(stack, warehouse):
    tables = "SELECT count() FROM system.tables WHERE database = %(d)s"
    before = warehouse.execute(tables, {"d": warehouse.settings.database})[0][0]
    assert before > 10
    done = _meter("demo", "--database", warehouse.settings.database, "--stack-dir", stack.folder)
    _one_line(done, "exists and was not made by meter demo")
    assert warehouse.execute(tables, {"d": warehouse.settings.database})[0][0] == before


def test_a_worker_refuses_a_topic_whose_stored_state_is_gone_before_joining(stack, warehouse):
    """Progress rows with no snapshot anywhere (partition_snapshots emptied, say): metering
    the partition afresh would lose the seqs and windows before it, so the worker names
    the partition and the fix instead of starting, or of dying on its first batch."""
    from streams.output.sink import PROGRESS_COLUMNS

    now = warehouse.execute("SELECT now()")[0][0]
    warehouse.insert(
        "partition_state",
        (*PROGRESS_COLUMNS, "written_at"),
        [("usage-lost", 3, 41, 0, 0, 0, 0, 0, 0, 0, now)],
    )
    url = stack.clickhouse_url_for(warehouse.settings.database)
    worker = ("worker", "--bootstrap", stack.bootstrap, "--give-up-after-s", "5")
    _one_line(
        _meter(*worker, "--topic", "usage-lost", "--clickhouse-url", url),
        "usage-lost/3 was applied through offset 41 but no snapshot of its state is stored",
    )
