"""The warehouse client and migrations without a server (warehouse/client.py,
warehouse/migrate.py): URLs, retries that leave the driver's connection alone, the
packaged migrations."""

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
