"""A fleet metered through the replicated stack (stack/cluster.py): two Tansu brokers on S3
storage behind HAProxy, ZooKeeper, two ClickHouse replicas. Each test ends with every total
exact against what the fleet emitted, read on each replica alone, and both replicas
holding the same rows (docs/CLUSTER.md says what an operator sees for each fault)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
from tests.e2e.agent_harness import AgentProcess, end_offsets, read_topic, unique_reports
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
    # Block deduplication off: exactness must not rest on it (docs/CLUSTER.md).
    settings = replace(cluster.settings(f"t_{name}"), insert_deduplicate=False)
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
    warehouse = Warehouse(settings)
    deduplicate = "SELECT value FROM system.settings WHERE name = 'insert_deduplicate'"
    assert warehouse.execute(deduplicate) == [("0",)]
    return worker_settings, warehouse


class FleetRun:
    """A fleet sending through HAProxy, one worker metering it (a new one after a kill),
    and the replicas to read progress from, one by one. The fleet is a publisher of a
    simulated fleet's reports at a steady rate, or, where the brokers are what fails,
    real agent processes, which spool through an outage and drain after it."""

    def __init__(self, cluster: ReplicatedStack, name: str, tmp_path: Path, agents: int) -> None:
        self.cluster, self.tmp_path = cluster, tmp_path
        self.settings, self.warehouse = _fleet_run(cluster, name, tmp_path)
        self.emitted = EmittedTotals()
        self.publisher: BackgroundPublisher | None = None
        self.agents = [
            AgentProcess(
                tmp_path / f"agent-{i}",
                self.settings.bootstrap,
                self.settings.topic,
                node_id=f"sc1-node-{i:03d}",
            )
            for i in range(agents)
        ]
        if not agents:
            spec = FleetSpec(nodes=24, gpus_per_node=8, tenants=3, reports_per_node=100, seed=41)
            frames = encode_all(fleet_reports(spec), self.emitted)
            self.publisher = BackgroundPublisher(self.settings, frames, per_second=40)
        self.workers = [WorkerProcess.start(self.settings, tmp_path / "worker-0.log")]
        self.replicas = _on_each_replica(self.settings.clickhouse)

    def start(self) -> None:
        for agent in self.agents:
            agent.start()
        if self.publisher:
            self.publisher.start()

    def sending(self) -> bool:
        if self.publisher:
            return self.publisher.is_alive()
        return all(a.proc is not None and a.proc.poll() is None for a in self.agents)

    def stop_sources(self) -> None:
        for agent in self.agents:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.kill()

    def _agents_sent(self) -> dict[int, int]:
        """Once every agent's spool is empty, stop them; what they minted must all be on
        the topic. Returns the topic's end offsets; ``emitted`` is what reached it."""
        for agent in self.agents:
            agent.wait_metric("meter_agent_spool_reports", lambda v: v == 0, 120)
        for agent in self.agents:
            assert agent.stop() == 0, agent.log_tail()
        minted = set()
        for agent in self.agents:
            state = agent.state()
            assert state["dropped"] == [], f"{agent.node_id} dropped reports"
            minted |= {(agent.node_id, seq) for seq in range(state["next_seq"])}
        records = read_topic(self.settings.bootstrap, self.settings.topic, want_keys=minted)
        reports = unique_reports(records)
        assert {(r["node_id"], r["seq"]) for r in reports} == minted, "a report never arrived"
        self.emitted.add_reports(reports)
        return end_offsets(records)

    @property
    def worker(self) -> WorkerProcess:
        return self.workers[-1]

    def accepted(self, replica: int = 1) -> int:
        """Reports metered so far, as one replica (r2 by default) holds them."""
        return progress(self.replicas[replica])["accepted_reports"]

    def wait_accepted(self, at_least: int, replica: int = 1, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.accepted(replica) < at_least:
            assert time.monotonic() < deadline, self.log()[-3000:]
            time.sleep(0.5)

    def kill_worker(self) -> None:
        self.worker.kill()
        self.workers.append(
            WorkerProcess.start(self.settings, self.tmp_path / f"worker-{len(self.workers)}.log")
        )

    def log(self) -> str:
        return "".join(Path(w.log_path).read_text() for w in self.workers)

    def finish(self) -> None:
        """Publishing ends, the group commits every offset, and then: both replicas hold
        the same rows, and every total is exact read on each alone."""
        try:
            ends = self.publisher.finish() if self.publisher else self._agents_sent()
            drain(self.settings, ends, self.workers)
        finally:
            for worker in self.workers:
                worker.stop()
        replicas = _on_each_replica(self.settings.clickhouse)
        _assert_replicas_identical(replicas)
        for replica in replicas:
            assert_exact(replica, self.emitted)
            assert progress(replica)["accepted_samples"] == self.emitted.samples
        for w in (self.warehouse, *self.replicas, *replicas):
            w.close()


def _dead(cluster: ReplicatedStack, name: str) -> bool:
    info = cluster.read()
    assert info is not None
    return not process.is_alive(info.all_pids()[name])


def _replica_killed(run: FleetRun) -> None:
    """r1, the replica the URL names first, is killed mid-run: the worker fails over to
    r2 and meters on while r1 is down; r1 restarts and fetches what it missed."""
    run.cluster.kill("clickhouse-r1")
    at_kill = run.accepted()
    time.sleep(12)
    assert _dead(run.cluster, "clickhouse-r1")
    assert run.accepted() > at_kill, "nothing was metered while r1 was down"
    run.cluster.restart("clickhouse-r1")
    first = run.settings.clickhouse.endpoints[0]
    assert f"failing over from {first} to replica" in run.log()


def _brokers_killed_one_after_the_other(run: FleetRun) -> None:
    """Each broker is killed and restarted in turn: HAProxy sends every client to the
    other, which reads the same log from S3; nothing acknowledged is lost."""
    for name in ("tansu1", "tansu2"):
        run.cluster.kill(name)
        before = run.accepted()
        time.sleep(6)
        assert _dead(run.cluster, name)
        run.wait_accepted(before + 20, timeout_s=60)  # metering went on through the other
        run.cluster.restart(name)
        time.sleep(3)


def _seaweedfs_down_10_s(run: FleetRun) -> None:
    """The S3 store dies for 10 s: produces and fetches fail meanwhile (the agents spool),
    and go on once it is back, without restarting a broker."""
    run.cluster.kill("seaweedfs")
    time.sleep(10)
    assert _dead(run.cluster, "seaweedfs")
    spooled = [a.metrics()["meter_agent_spool_reports"] for a in run.agents]
    assert max(spooled) >= 3, f"the agents did not spool through the outage: {spooled}"
    before = run.accepted()
    run.cluster.restart("seaweedfs")
    run.wait_accepted(before + 20, timeout_s=90)


def _zookeeper_stopped_20_s(run: FleetRun) -> None:
    """ZooKeeper stops for 20 s: every replica refuses inserts (read-only tables); the
    worker waits and retries, neither crashing nor skipping, and goes on after."""
    run.cluster.kill("zookeeper")
    time.sleep(20)
    assert _dead(run.cluster, "zookeeper")
    before = run.accepted()
    run.cluster.restart("zookeeper")
    run.wait_accepted(before + 20, timeout_s=90)
    assert "Code: 242" in run.log() or "Code: 225" in run.log() or "Code: 999" in run.log()
    assert all(w.alive() for w in run.workers), "the worker exited while ZooKeeper was down"


def _worker_and_replica_killed_at_once(run: FleetRun) -> None:
    """The worker and replica r1 are killed at the same moment; a new worker starts at
    once (on r2, r1 being down) and r1 restarts 10 s later."""
    run.cluster.kill("clickhouse-r1")
    run.kill_worker()
    before = run.accepted()
    time.sleep(10)
    assert _dead(run.cluster, "clickhouse-r1")
    run.cluster.restart("clickhouse-r1")
    run.wait_accepted(before + 20, timeout_s=90)


# Faults of the broker side: the fleet is real agents, which spool through them.
_BROKER_SIDE = (_brokers_killed_one_after_the_other, _seaweedfs_down_10_s)


@pytest.mark.parametrize(
    "fault",
    [
        _replica_killed,
        _brokers_killed_one_after_the_other,
        _seaweedfs_down_10_s,
        _zookeeper_stopped_20_s,
        _worker_and_replica_killed_at_once,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_fleet_is_metered_exactly_through(
    fault: Callable[[FleetRun], None], cluster: ReplicatedStack, tmp_path: Path
) -> None:
    info = cluster.read()
    assert info is not None
    for process_name, pid in info.all_pids().items():
        if not process.is_alive(pid):  # left dead by an earlier test that failed
            cluster.restart(process_name)
    agents = 4 if fault in _BROKER_SIDE else 0
    run = FleetRun(cluster, fault.__name__.strip("_")[:24], tmp_path, agents)
    run.start()
    try:
        run.wait_accepted(20 if agents else 100)
        fault(run)
        assert run.sending(), "the fleet ended before the fault did: make it longer"
    except BaseException:
        run.stop_sources()
        for worker in run.workers:
            worker.kill()
        raise
    run.finish()
