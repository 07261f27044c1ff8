"""The warehouse client and migrations without a server (warehouse/client.py,
warehouse/migrate.py): URLs, retries that leave the driver's connection alone, the
packaged migrations."""

import time

import pytest

from core.errors import ConfigError
from warehouse.client import ClickHouseSettings
from warehouse.migrate import Migration, available

CH = ClickHouseSettings()


def test_clickhouse_url_parsing():
    s = ClickHouseSettings.from_url("clickhouse://fin:pw@db.internal:9440/ledger")
    assert (s.host, s.port, s.user, s.password, s.database) == (
        "db.internal",
        9440,
        "fin",
        "pw",
        "ledger",
    )
    with pytest.raises(ConfigError):
        ClickHouseSettings.from_url("http://db:8123/x")
    with pytest.raises(ConfigError):
        ClickHouseSettings(database="x; DROP DATABASE y")


def test_migration_statements_split_and_qualify_the_database():
    m = Migration(
        9, "x", "-- comment; not a statement\nCREATE VIEW v AS SELECT 1 FROM {db}.t;\n\nSELECT 2;\n"
    )
    assert m.statements("ledger") == ["CREATE VIEW v AS SELECT 1 FROM ledger.t", "SELECT 2"]


def test_packaged_migrations_are_numbered_without_gaps():
    versions = [m.version for m in available()]
    assert versions == list(range(1, len(versions) + 1))


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_insert_retries_leave_the_drivers_connection_alone():
    """Ledger inserts run two at a time beside driver queries on other threads; a retry of
    one must not reset the shared driver connection under another (a restart of
    ClickHouse once crashed a worker that way). Driver calls still reset it."""
    import threading

    from warehouse.client import Backoff, Warehouse
    from warehouse.errors import SinkError

    port = _closed_port()
    warehouse = Warehouse(
        ClickHouseSettings(port=port, http_port=port),
        Backoff(first_s=0.01, give_up_after_s=0.05),
        sleep=lambda s: None,
    )
    resets = []
    warehouse._client.disconnect = lambda: resets.append(threading.current_thread().name)
    errors: list[BaseException] = []

    def insert() -> None:
        try:
            warehouse.insert_native("usage_ledger", ("node_id",), b"\x01\x01", 1)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=insert) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 2 and all(isinstance(e, SinkError) for e in errors)
    assert resets == []
    with pytest.raises(SinkError):
        warehouse.execute("SELECT 1")
    assert resets  # the driver's own retries reconnect


def test_a_cluster_in_the_url_makes_every_statement_replicated_and_on_cluster():
    from warehouse.cluster_ddl import for_cluster

    s = ClickHouseSettings.from_url(
        "clickhouse://u:p@ch1:9000/gpu_meter?http_port=8123&cluster=meter"
    )
    assert s.cluster == "meter" and ClickHouseSettings.from_url(s.to_url()) == s
    with pytest.raises(ConfigError):
        ClickHouseSettings(cluster="meter; DROP")
    # Every statement of every migration: DDL on the cluster, no engine left unreplicated.
    for m in available():
        for statement in m.statements("gpu_meter"):
            out = for_cluster(statement, "meter", "gpu_meter", m.version)
            if statement.upper().startswith(("CREATE", "DROP", "ALTER", "RENAME")):
                assert " ON CLUSTER meter" in out, out[:120]
            assert "ENGINE = MergeTree" not in out and "ENGINE = ReplacingMergeTree" not in out
    renamed = for_cluster("RENAME TABLE a TO b", "meter", "db", 12)
    assert renamed == "RENAME TABLE db.a TO db.b ON CLUSTER meter"


def test_replicas_in_the_url_round_trip_and_a_malformed_one_is_named():
    from warehouse.client import Endpoint

    url = (
        "clickhouse://u:p@ch1:9000/gpu_meter?http_port=8123&cluster=meter"
        "&replica=ch2:9001:8124&replica=ch3:9002:8125"
    )
    s = ClickHouseSettings.from_url(url)
    assert s.endpoints == (
        Endpoint("ch1", 9000, 8123),
        Endpoint("ch2", 9001, 8124),
        Endpoint("ch3", 9002, 8125),
    )
    assert ClickHouseSettings.from_url(s.to_url()) == s
    assert s.insert_deduplicate and "insert_deduplicate" not in s.server_settings
    off = ClickHouseSettings.from_url(url + "&insert_deduplicate=0")
    assert off.server_settings["insert_deduplicate"] == 0
    assert ClickHouseSettings.from_url(off.to_url()) == off
    with pytest.raises(ConfigError, match="HOST:PORT:HTTP_PORT"):
        ClickHouseSettings.from_url(url + "&replica=ch4:9000")
    with pytest.raises(ConfigError, match="&cluster=NAME"):
        ClickHouseSettings.from_url("clickhouse://ch1:9000/db?replica=ch2:9000:8123")
    with pytest.raises(ConfigError, match="out of range"):
        ClickHouseSettings.from_url("clickhouse://ch1/db?cluster=m&replica=ch2:9000:70000")


class _Server:
    """A stand-in for one replica's driver connection: answers, or is down."""

    def __init__(self, name: str, down: bool) -> None:
        self.name, self.down, self.queries = name, down, []

    def execute(self, sql, params=None):
        from clickhouse_driver import errors

        if self.down:
            raise errors.NetworkError(f"{self.name} is down")
        self.queries.append(sql)
        return [(self.name,)]

    def disconnect(self) -> None:
        pass


def test_a_warehouse_fails_over_to_the_next_replica_and_stays_there(monkeypatch):
    """The first replica down: the query is answered by the second, and every later read
    and write goes there too (what it reads is what it wrote), even once the first is
    back; the HTTP inserts move with it."""
    from warehouse.client import Backoff, Warehouse

    servers = {"ch1": _Server("ch1", down=True), "ch2": _Server("ch2", down=False)}
    monkeypatch.setattr(
        Warehouse, "_connect", lambda self, database, *a, **k: servers[self.endpoint.host]
    )
    s = ClickHouseSettings.from_url("clickhouse://ch1:9000/db?cluster=m&replica=ch2:9001:8124")
    warehouse = Warehouse(s, Backoff(first_s=0.01, give_up_after_s=0.5), sleep=time.sleep)
    assert warehouse.execute("SELECT 1") == [("ch2",)]
    servers["ch1"].down = False
    assert warehouse.execute("SELECT 2") == [("ch2",)]
    warehouse.insert("t", ("a",), [(1,)])
    assert servers["ch2"].queries == ["SELECT 1", "SELECT 2", "INSERT INTO t (a) VALUES"]
    assert servers["ch1"].queries == []
    assert (warehouse.endpoint.host, warehouse.endpoint.http_port) == ("ch2", 8124)


def test_two_threads_failing_on_one_replica_move_once(monkeypatch):
    """Ledger inserts run two at a time: both failing on the same replica must not move
    the warehouse two steps (back onto the replica that failed)."""
    from warehouse.client import Warehouse

    monkeypatch.setattr(Warehouse, "_connect", lambda self, database, *a, **k: _Server("x", False))
    s = ClickHouseSettings.from_url("clickhouse://ch1:9000/db?cluster=m&replica=ch2:9001:8124")
    warehouse = Warehouse(s)
    assert warehouse._fail_over(0) and warehouse._fail_over(0)
    assert warehouse.endpoint.host == "ch2"
