import pytest

from core.errors import ConfigError
from streams.contract import ProcessorSettings, Rejection, SourceMessage
from streams.dlq import dead_letter_headers, parse_headers
from streams.settings import WorkerSettings
from warehouse.client import ClickHouseSettings
from warehouse.migrate import Migration, available

CH = ClickHouseSettings()


def test_clickhouse_url_parsing():
    s = ClickHouseSettings.from_url("clickhouse://fin:pw@db.internal:9440/ledger")
    assert (s.host, s.port, s.user, s.password, s.database) == (
        "db.internal", 9440, "fin", "pw", "ledger",
    )  # fmt: skip
    with pytest.raises(ConfigError):
        ClickHouseSettings.from_url("http://db:8123/x")
    with pytest.raises(ConfigError):
        ClickHouseSettings(database="x; DROP DATABASE y")


def test_worker_settings_are_validated_once():
    s = WorkerSettings(bootstrap="127.0.0.1:9092", topic="usage", clickhouse=CH)
    assert s.dlq_topic == "usage.dlq"
    with pytest.raises(ConfigError):
        WorkerSettings(bootstrap="127.0.0.1:9092", topic="bad topic", clickhouse=CH)
    with pytest.raises(ConfigError):
        WorkerSettings(bootstrap="b:1", topic="t", clickhouse=CH, heartbeat_interval_s=1.0)
    with pytest.raises(ConfigError, match="processing_threads"):
        WorkerSettings(bootstrap="b:1", topic="t", clickhouse=CH, processing_threads=0)
    with pytest.raises(ConfigError):
        ProcessorSettings(window_us=7_000_000)  # must divide an hour


def test_migration_statements_split_and_qualify_the_database():
    m = Migration(
        9, "x", "-- comment; not a statement\nCREATE VIEW v AS SELECT 1 FROM {db}.t;\n\nSELECT 2;\n"
    )
    assert m.statements("ledger") == ["CREATE VIEW v AS SELECT 1 FROM ledger.t", "SELECT 2"]


def test_packaged_migrations_are_numbered_without_gaps():
    versions = [m.version for m in available()]
    assert versions == list(range(1, len(versions) + 1))


def test_dead_letter_headers_round_trip():
    rejection = Rejection(
        SourceMessage("usage", 4, 77, b"k", b"v", 0), "negative_counter", "sample 0: x",
        node_id="n1", boot_id="b1", seq=12,
    )  # fmt: skip
    headers = parse_headers(dead_letter_headers(rejection))
    assert headers == {
        "reason": "negative_counter", "detail": "sample 0: x", "topic": "usage",
        "partition": "4", "offset": "77", "node_id": "n1", "boot_id": "b1", "seq": "12",
        "payload_size": "1", "payload": "whole",
        "payload_sha256": "4c94485e0c21ae6c41ce1dfe7b6bfaceea5ab68e40a2476f50208e526f506080",
    }  # fmt: skip


def test_native_block_layout_of_strings_and_integers():
    from streams.native import encode_block, uleb128

    assert uleb128(0) == b"\x00" and uleb128(127) == b"\x7f" and uleb128(300) == b"\xac\x02"
    rows = [("é" * 200, 2**64 - 1, 7, 1), ("", 0, 2**32 - 1, 0)]
    block = encode_block(("s", "q", "i", "b"), ("String", "UInt64", "UInt32", "UInt8"), rows)
    assert block == (
        b"\x04\x02"  # columns, rows
        + b"\x01s\x06String" + b"\x90\x03" + "é".encode() * 200 + b"\x00"
        + b"\x01q\x06UInt64" + b"\xff" * 8 + b"\x00" * 8
        + b"\x01i\x06UInt32" + b"\x07\x00\x00\x00" + b"\xff" * 4
        + b"\x01b\x05UInt8" + b"\x01\x00"
    )  # fmt: skip
    assert encode_block(("s",), ("String",), []) == b""


def test_native_array_columns_are_end_offsets_then_all_elements():
    from streams.native import encode_block

    rows = [(["ab", "c"], [1, 2]), ([], []), (["d"], [3])]
    block = encode_block(("g", "v"), ("Array(String)", "Array(UInt32)"), rows)
    ends = b"\x02" + b"\x00" * 7 + b"\x02" + b"\x00" * 7 + b"\x03" + b"\x00" * 7
    assert block == (
        b"\x02\x03"
        + b"\x01g\x0dArray(String)" + ends + b"\x02ab\x01c\x01d"
        + b"\x01v\x0dArray(UInt32)" + ends
        + b"\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00"
    )  # fmt: skip


def test_a_report_has_a_ledger_row_per_gpu_holding_with_its_samples_in_report_order():
    from streams.native import LEDGER_COLUMNS, holding_rows
    from tests.factories import TICK_US, make_sample

    t0, t1 = 10**15, 10**15 + TICK_US
    a, b = "GPU-a", "GPU-b"
    samples = [  # tick-major, as agents send them; GPU-b's job ends after the first tick
        make_sample(t0, gpu_uuid=a, allocated_us=1),
        make_sample(t0, gpu_uuid=b, gpu_index=1, allocated_us=2),
        make_sample(t1, gpu_uuid=a, allocated_us=3),
        make_sample(t1, gpu_uuid=b, gpu_index=1, job_id="job-2", allocated_us=4),
    ]
    report = ("node", "boot", 7, "sc1", t0, t1 + TICK_US, 3, 42)
    rows = [
        dict(zip(LEDGER_COLUMNS, r, strict=True))
        for r in holding_rows(report, samples, [0, 0, 1, 1])
    ]
    assert [(r["gpu_uuid"], r["gpu_index"], r["job_id"]) for r in rows] == [
        (a, 0, "job-1"), (b, 1, "job-1"), (b, 1, "job-2"),
    ]  # fmt: skip
    assert all(r["seq"] == 7 and r["source_offset"] == 42 for r in rows)
    assert [r["tick_start_us"] for r in rows] == [[t0, t1], [t0], [t1]]
    assert [r["tick_end_us"] for r in rows] == [[t1, t1 + TICK_US], [t1], [t1 + TICK_US]]
    assert [r["allocated_us"] for r in rows] == [[1, 3], [2], [4]]
    assert [r["late"] for r in rows] == [[0, 1], [0], [1]]


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
