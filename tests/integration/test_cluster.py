"""The replicated local stack (stack/cluster.py), started by the project's own code: two
Tansu brokers on one S3 bucket behind HAProxy, ZooKeeper, two ClickHouse replicas. What a
client sees through the one bootstrap address survives a broker's kill -9, replicated
tables created ON CLUSTER replicate, and the stack stops whole."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from clickhouse_driver import Client
from kafka import KafkaConsumer, KafkaProducer

from stack import clickhouse, process
from stack.cluster import CLUSTER_NAME, ReplicatedStack

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=10)
    try:
        for value in values:
            producer.send(topic, value).get(timeout=30)
    finally:
        producer.close()


def _consume(bootstrap: str, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=8000
    )
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


def test_the_replicated_stack_survives_a_broker_and_replicates_the_warehouse(tmp_path: Path):
    stack = ReplicatedStack(tmp_path / "cluster")
    info = stack.up()
    try:
        assert stack.status()["state"] == "up"
        first = [b"before-%d" % i for i in range(40)]
        _produce(info.bootstrap, "probe", first)
        # A broker dies: HAProxy sends clients to the other, which reads the same bucket.
        os.kill(info.pids["tansu1"], signal.SIGKILL)
        second = [b"after-%d" % i for i in range(40)]
        _produce(info.bootstrap, "probe", second)
        assert sorted(_consume(info.bootstrap, "probe")) == sorted(first + second)

        password = clickhouse.stack_password(stack.folder)
        r1, r2 = (Client("127.0.0.1", port=r.tcp_port, password=password) for r in info.replicas)
        r1.execute(f"CREATE DATABASE probe ON CLUSTER {CLUSTER_NAME}")
        r1.execute(
            f"CREATE TABLE probe.t ON CLUSTER {CLUSTER_NAME} (k UInt64, v UInt64) ENGINE = "
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/probe_t', '{replica}', v) "
            "ORDER BY k"
        )
        r1.execute("INSERT INTO probe.t VALUES", [(k, 1) for k in range(100)])
        deadline = time.monotonic() + 10
        while r2.execute("SELECT count(), sum(k) FROM probe.t") != [(100, 4950)]:
            assert time.monotonic() < deadline, "the second replica never got the rows"
            time.sleep(0.1)
        r1.disconnect()
        r2.disconnect()
    finally:
        pids = stack.read().all_pids() if stack.read() else {}
        assert stack.down()
    assert pids and not any(process.is_alive(pid) for pid in pids.values())
    assert stack.status()["state"] == "down"


def test_a_missing_server_is_named_with_the_command_that_installs_it(tmp_path, monkeypatch):
    from stack import cluster
    from stack.errors import StackError

    monkeypatch.setattr(cluster, "ZOOKEEPER_JAR", tmp_path / "no-zookeeper.jar")
    with pytest.raises(StackError, match="apt-get install -y haproxy zookeeper"):
        ReplicatedStack(tmp_path / "cluster").up()
    assert not (tmp_path / "cluster").exists()  # refused before anything started


def test_the_migrations_build_the_same_replicated_warehouse_on_every_replica(tmp_path: Path):
    """One set of migration files: on a cluster every table is created ON CLUSTER with a
    Replicated engine and every view on each replica, the record of what was applied is
    replicated too, and migrating through the other replica applies nothing more."""
    from warehouse.client import ClickHouseSettings, Warehouse
    from warehouse.migrate import available, migrate, pending

    stack = ReplicatedStack(tmp_path / "cluster")
    info = stack.up()
    try:
        password = clickhouse.stack_password(stack.folder)
        r1, r2 = (
            Warehouse(
                ClickHouseSettings(
                    port=r.tcp_port, http_port=r.http_port, password=password, cluster="meter"
                )
            )
            for r in info.replicas
        )
        applied = migrate(r1)
        assert [m.version for m in applied] == [m.version for m in available()]
        tables = "SELECT name, engine FROM system.tables WHERE database = 'gpu_meter' ORDER BY name"
        on_r1 = r1.execute(tables)
        assert on_r1 == r2.execute(tables) and len(on_r1) > 40
        stored = [(name, engine) for name, engine in on_r1 if engine != "View"]
        assert stored and all(engine.startswith("Replicated") for _, engine in stored), stored
        count = "SELECT count() FROM schema_migrations"
        deadline = time.monotonic() + 10
        while r2.execute(count) != [(len(available()),)]:
            assert time.monotonic() < deadline, "the migration record did not replicate"
            time.sleep(0.1)
        assert pending(r2) == [] and migrate(r2) == []
        r1.close()
        r2.close()
    finally:
        stack.down()
