"""A fleet metered through the replicated stack (stack/cluster.py): two Tansu brokers on S3
storage behind HAProxy, ZooKeeper, two ClickHouse replicas. Each test ends with every total
exact against what the fleet emitted, read on each replica alone, and both replicas
holding the same rows (docs/CLUSTER.md says what an operator sees for each fault)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.fleet import FleetSpec, fleet_reports
from agent.totals import EmittedTotals
from meter.runner import WorkerProcess
from stack import process
from stack.cluster import ReplicatedStack
from streams.host.settings import WorkerSettings
from streams.host.topics import ensure_topics
from tests.e2e.harness import BackgroundPublisher, assert_exact, drain, encode_all, progress
from warehouse.client import ClickHouseSettings, Warehouse

pytestmark = pytest.mark.e2e


def _meter(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "meter", *args], capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedStack]:
    """The stack as an operator starts it: ``meter stack up --replicated``."""
    stack_dir = tmp_path_factory.mktemp("cluster") / "stack"
    up = _meter("stack", "up", "--replicated", "--stack-dir", str(stack_dir))
    stack = ReplicatedStack(stack_dir.with_name("stack-replicated"))
    assert "&replica=127.0.0.1:" in up.stdout and stack.running(), up.stdout
    try:
        yield stack
    finally:
        pids = stack.read().all_pids() if stack.read() else {}
        _meter("stack", "down", "--replicated", "--stack-dir", str(stack_dir))
        assert not any(process.is_alive(pid) for pid in pids.values())


def _on_each_replica(settings: ClickHouseSettings) -> list[Warehouse]:
    """One warehouse per replica, each reading that replica alone."""
    return [
        Warehouse(replace(settings, host=e.host, port=e.port, http_port=e.http_port, replicas=()))
        for e in settings.endpoints
    ]


def _replicated_tables(warehouse: Warehouse) -> list[str]:
    return [
        name
        for (name,) in warehouse.execute(
            "SELECT name FROM system.tables WHERE database = %(db)s "
            "AND engine LIKE 'Replicated%%' ORDER BY name",
            {"db": warehouse.settings.database},
        )
    ]


def _assert_replicas_identical(replicas: list[Warehouse], timeout_s: float = 90) -> None:
    """Every replicated table holds the same rows on both replicas (a digest of all
    rows as FINAL reads them, so a merge that has run on one side only does not count)."""
    tables = _replicated_tables(replicas[0])
    assert len(tables) > 20
    for warehouse in replicas:
        for table in tables:
            warehouse.execute_long(f"SYSTEM SYNC REPLICA {table}", 120, {})
    queries = {t: _digest_sql(replicas[0], t) for t in tables}
    digests: list[list[tuple]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        digests = [[(t, *w.execute(q)[0]) for t, q in queries.items()] for w in replicas]
        if digests[0] == digests[1]:
            return
        assert time.monotonic() < deadline, [
            (a, b) for a, b in zip(*digests, strict=True) if a != b
        ]
        time.sleep(1)


def _digest_sql(warehouse: Warehouse, table: str) -> str:
    """Row count and a hash of every row's every column (18.16 hashes no Decimal or
    array directly: each column goes through its text form)."""
    columns = warehouse.execute(
        "SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(t)s "
        "AND default_kind != 'ALIAS'",
        {"db": warehouse.settings.database, "t": table},
    )
    text = [
        f"arrayStringConcat(arrayMap(x -> toString(x), {name}), ',')"
        if kind.startswith("Array")
        else f"toString({name})"
        for name, kind in columns
    ]
    ((engine,),) = warehouse.execute(
        "SELECT engine FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": warehouse.settings.database, "t": table},
    )
    # FINAL: a replica that has not yet run a merge the other has still holds the same rows
    final = " FINAL" if "Replacing" in engine else ""
    row = ", '|', ".join(text)
    return f"SELECT count(), sum(cityHash64(concat({row}))) FROM {table}{final}"


def _fleet_run(
    cluster: ReplicatedStack, name: str, tmp_path: Path
) -> tuple[WorkerSettings, Warehouse]:
    """A fresh database (migrated with ``meter migrate`` through the failover URL) and
    topic for one test."""
    settings = cluster.settings(f"t_{name}")
    _meter("migrate", "--clickhouse-url", settings.to_url(), "--give-up-after-s", "60")
    info = cluster.read()
    assert info is not None
    worker_settings = WorkerSettings(
        bootstrap=info.bootstrap,
        topic=f"usage-{name}",
        app_id=f"meter-{name}",
        partitions=4,
        clickhouse=settings,
        datadir=tmp_path / "faust",
    )
    ensure_topics(info.bootstrap, {worker_settings.topic: 4, worker_settings.dlq_topic: 1})
    return worker_settings, Warehouse(settings)


def test_a_fleet_is_metered_exactly_through_a_replica_killed_and_restarted(
    cluster: ReplicatedStack, tmp_path: Path
) -> None:
    """Replica r1 (the one the URL names first) is killed with kill -9 mid-run: the worker
    fails over to r2 and goes on metering while r1 is down; r1 restarts, fetches what it
    missed, and both replicas end with every total exact and the same rows."""
    settings, warehouse = _fleet_run(cluster, "replica_kill", tmp_path)
    spec = FleetSpec(nodes=24, gpus_per_node=8, tenants=3, reports_per_node=40, seed=41)
    emitted = EmittedTotals()
    publisher = BackgroundPublisher(
        settings, encode_all(fleet_reports(spec), emitted), per_second=40
    )
    worker = WorkerProcess.start(settings, tmp_path / "worker.log")
    r1, r2 = _on_each_replica(settings.clickhouse)
    publisher.start()
    try:
        deadline = time.monotonic() + 120
        while progress(r2)["accepted_reports"] < 100:
            assert worker.alive() and time.monotonic() < deadline, worker.log_path.read_text()
            time.sleep(0.5)
        cluster.kill("clickhouse-r1")
        at_kill = progress(r2)["accepted_reports"]
        time.sleep(12)  # the worker writes to r2 alone meanwhile
        while_down = progress(r2)["accepted_reports"]
        info = cluster.read()
        assert info is not None and not process.is_alive(info.replicas[0].pid)
        cluster.restart_replica("r1")
        drain(settings, publisher.finish(), [worker])
    finally:
        worker.stop()
    log = worker.log_path.read_text()
    first = settings.clickhouse.endpoints[0]
    assert f"failing over from {first} to replica" in log, log[-3000:]
    assert while_down > at_kill, "nothing was metered while r1 was down"
    replicas = _on_each_replica(settings.clickhouse)
    _assert_replicas_identical(replicas)
    for replica in replicas:
        assert_exact(replica, emitted)
        assert progress(replica)["accepted_samples"] == emitted.samples == spec.samples
    for w in (warehouse, r1, r2, *replicas):
        w.close()
