import time
from datetime import UTC, datetime

import pytest

from streams.contract import BatchOutcome, Rejection, RollupRow, SourceMessage
from streams.output.sink import WarehouseSink, load_state
from streams.processing.aggregate import RollupKey
from streams.processing.state import PartitionState
from tests.factories import EXACT_AT_EVERY_GRAIN
from warehouse import migrate as migrate_module
from warehouse.client import ClickHouseSettings, Warehouse
from warehouse.errors import MigrationError
from warehouse.migrate import Migration, available, migrate

pytestmark = pytest.mark.integration

T0_US = 1_793_491_200_000_000


def test_migrations_are_recorded_and_idempotent(warehouse):
    recorded = warehouse.execute("SELECT version, sha256 FROM schema_migrations ORDER BY version")
    assert recorded == [(m.version, m.sha256) for m in available()]
    assert migrate(warehouse) == []


def test_an_edited_applied_migration_is_refused(warehouse, monkeypatch):
    edited = [Migration(m.version, m.name, m.sql + "\n-- edited\n") for m in available()]
    monkeypatch.setattr(migrate_module, "available", lambda: edited)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(warehouse)


def _outcome(allocated_us: int, version: int) -> BatchOutcome:
    key = RollupKey("aurora-labs", "H100", "sc1", T0_US)
    message = SourceMessage("usage", 0, 3, b"k", b"\xc3\x01\xff\x00garbage", 0)
    return BatchOutcome(
        topic="usage",
        partition=0,
        applied_offset=version,
        rollups=[RollupRow(key, 0, (allocated_us, 1, 0, 5, 1), version)],
        rejections=[Rejection(message, "bad", "d")],
    )


def _state(applied_offset: int) -> PartitionState:
    state = PartitionState("usage", 0, applied_offset=applied_offset)
    state.counters["accepted_reports"] = applied_offset
    return state


def _store_as_before_0022(wh: Warehouse, state: PartitionState, blob: bytes) -> None:
    """A partition's state as a worker older than migration 0022 stored it: the snapshot
    in ``partition_state`` itself, with every batch."""
    from streams.output.sink import PROGRESS_COLUMNS, state_row

    row = state_row(state, snapshot=False)
    now = datetime.now(tz=UTC)
    wh.insert(
        "partition_state", (*PROGRESS_COLUMNS, "state", "written_at"), [(*row.progress, blob, now)]
    )


def test_sink_rewrites_are_idempotent_and_the_highest_version_wins(warehouse):
    sink = WarehouseSink(warehouse)
    sink.write(_outcome(10, version=3), _state(3))
    sink.write(_outcome(10, version=3), _state(3))  # a retried batch
    sink.write(_outcome(25, version=7), _state(7))  # the window grew
    sink.write(_outcome(10, version=3), _state(3))  # an old batch redelivered late must not win
    assert warehouse.execute("SELECT allocated_us, sample_count FROM usage_by_minute") == [(25, 1)]
    rows = warehouse.execute(
        "SELECT reason, lower(hex(payload)), payload_size FROM rejected_reports FINAL"
    )
    assert rows == [("bad", b"\xc3\x01\xff\x00garbage".hex(), 11)]
    assert warehouse.execute("SELECT reason, reports FROM rejected_by_reason") == [("bad", 1)]
    # The partition state with the highest applied offset is the one a new owner resumes.
    assert load_state(warehouse, "usage", 0) == _state(7)
    assert load_state(warehouse, "usage", 1) == PartitionState("usage", 1)


def test_a_worker_resumes_from_the_latest_snapshot_wherever_it_was_stored(warehouse):
    """Progress is written every batch, a snapshot only every few seconds (the newest in
    ``partition_snapshots``, or in ``partition_state`` from before migration 0022): the
    state loaded is the snapshot with the highest offset, never a newer progress row."""
    from streams.output.sink import state_row

    sink = WarehouseSink(warehouse)
    sink.write_many([(_outcome(10, version=3), state_row(_state(3), snapshot=True))])
    sink.write_many([(_outcome(25, version=7), state_row(_state(7), snapshot=False))])
    assert warehouse.execute("SELECT applied_offset FROM pipeline_progress") == [(7,)]
    assert load_state(warehouse, "usage", 0) == _state(3)
    _store_as_before_0022(warehouse, _state(5), _state(5).to_snapshot())
    assert load_state(warehouse, "usage", 0) == _state(5)
    sink.write_many([(_outcome(25, version=7), state_row(_state(7), snapshot=True))])
    assert load_state(warehouse, "usage", 0) == _state(7)


def test_progress_without_any_snapshot_is_refused_not_started_afresh(warehouse):
    from streams.errors import StateMissingError
    from streams.output.sink import state_row

    WarehouseSink(warehouse).write_many(
        [(_outcome(10, version=3), state_row(_state(3), snapshot=False))]
    )
    with pytest.raises(StateMissingError, match=r"usage/0 was applied through offset 3"):
        load_state(warehouse, "usage", 0)
    assert load_state(warehouse, "usage", 1) == PartitionState("usage", 1)


def test_finance_user_cannot_write(local_stack, stack, warehouse):
    from clickhouse_driver import Client
    from clickhouse_driver.errors import ServerException

    from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER

    local_stack.allow_finance(warehouse.settings.database)
    finance = Client(
        "127.0.0.1",
        port=stack.clickhouse_port,
        user=FINANCE_USER,
        password=FINANCE_PASSWORD,
        database=warehouse.settings.database,
    )
    assert finance.execute("SELECT count() FROM usage_by_minute") == [(0,)]
    assert finance.execute("SELECT count() FROM contract_position_by_month") == [(0,)]
    for sql in (
        "INSERT INTO rejected_reports (reason) VALUES ('x')",
        "DROP TABLE usage_rollup_partials",
        "ALTER TABLE usage_rollup_partials DELETE WHERE 1",
        "INSERT INTO statements (tenant_id, period) VALUES ('aurora-labs', '2026-10')",
        "ALTER TABLE contract_rates UPDATE rate_per_gpu_hour = 0 WHERE 1",
        "ALTER TABLE contracts ADD COLUMN discount Float64",
        "DROP TABLE statements",
        "DROP DATABASE " + warehouse.settings.database,
        "CREATE TABLE scratch (x UInt8) ENGINE = Memory",
    ):
        with pytest.raises(ServerException) as refused:
            finance.execute(sql)
        assert refused.value.code == 164, sql  # READONLY, not a typo in the statement
    assert warehouse.execute("SELECT count() FROM statements") == [(0,)]


def test_meter_status_reports_progress_gaps_and_rejections(stack, warehouse):
    import subprocess
    import sys

    from streams.processing.seqtrack import GapRow, NodeSeq

    outcome = _outcome(10, version=3)
    outcome.gap_rows = [GapRow("sc1-node-00009", "b" * 36, 4, 6, T0_US, True, 3)]
    state = _state(3)
    state.counters["duplicate_reports"] = 2
    state.nodes[("sc1-node-00009", "b" * 36)] = NodeSeq(next_seq=8, gaps=[[4, 6, T0_US]])
    state.closed_before_us = T0_US  # windows before this are final
    WarehouseSink(warehouse).write(outcome, state)
    url = stack.clickhouse_url_for(warehouse.settings.database)
    done = subprocess.run(
        [sys.executable, "-m", "meter", "status", "--clickhouse-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("usage "))
    assert row.split() == [
        "usage",
        "0",
        "3",
        "?",
        "3",
        "0",
        "2",
        "0",
        "0",
        "1",
        "2026-11-01",
        "00:00:00",
        "UTC",
    ]
    assert "sc1-node-00009 boot bbbbbbbb seqs 4..6 (3)" in done.stdout
    assert "rejected reports by reason: bad=1" in done.stdout
    assert "lag ?: unknown" in done.stdout and "--metrics-url" in done.stdout


def test_one_warehouse_can_be_used_from_several_threads_at_once(warehouse):
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> int:
        warehouse.insert("schema_migrations", ("version", "name"), [(1000 + i, "t")])
        return warehouse.execute("SELECT count() FROM schema_migrations")[0][0]

    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(work, range(40)))
    assert len(counts) == 40
    assert warehouse.execute("SELECT count() FROM schema_migrations WHERE version >= 1000") == [
        (40,)
    ]


_SAMPLE_COLUMNS = (
    "gpu_uuid",
    "tick_start_us",
    "tick_end_us",
    "gpu_index",
    "sku",
    "tenant_id",
    "job_id",
    "allocated_us",
    "busy_us",
    "unhealthy_us",
    "energy_mj",
    "memory_peak_bytes",
)
_REPORT_COLUMNS = (
    "node_id",
    "boot_id",
    "seq",
    "cluster",
    "interval_start_us",
    "interval_end_us",
    "source_partition",
    "source_offset",
)
_PACKED_COLUMNS = (
    *_REPORT_COLUMNS,
    "gpu_uuids",
    "gpu_indexes",
    "skus",
    "tenant_ids",
    "job_ids",
    "tick_starts_us",
    "tick_ends_us",
    "gpu_at",
    "tick_at",
    "allocated_us",
    "busy_us",
    "unhealthy_us",
    "energy_mj",
    "memory_peak_bytes",
    "late",
)


def _packed_row(node: str, gpus: int, ticks: int) -> tuple:
    """A packed report (0008, 0012) of ``gpus`` x ``ticks`` samples, tick-major; sample i
    has allocated_us 1000 + i."""
    from tests.factories import TICK_US

    n = gpus * ticks
    starts = [T0_US + t * TICK_US for t in range(ticks)]
    return (
        node,
        "b1",
        0,
        "sc1",
        T0_US,
        T0_US + ticks * TICK_US,
        2,
        9,
        [f"GPU-{g}" for g in range(gpus)],
        list(range(gpus)),
        ["H100"] * gpus,
        ["aurora-labs" if g % 2 else "borealis-ai" for g in range(gpus)],
        ["job-1"] * gpus,
        starts,
        [s + TICK_US for s in starts],
        [g + 1 for _ in range(ticks) for g in range(gpus)],
        [t + 1 for t in range(ticks) for _ in range(gpus)],
        [1000 + i for i in range(n)],
        [1] * n,
        [0] * n,
        [2] * n,
        [3] * n,
        [0] * n,
    )


def test_upgrading_every_earlier_ledger_copies_it_into_the_holdings_table_and_view(
    stack, unique_name, monkeypatch
):
    """A warehouse with ledger rows in each earlier layout (a row per sample, 0004; per
    report, 0007; packed, 0008 and 0012, one of them too large to convert in SQL) is
    migrated to 0013: every sample is copied once into usage_ledger_holdings, the view shows
    them beside what the worker writes now, and copying again changes nothing."""
    from schemas import ReportCodec
    from streams.contract import ProcessorSettings
    from streams.output.native import LEDGER_COLUMNS, LEDGER_TABLE
    from streams.processing.hotpath.processor import FastPartitionProcessor
    from tests.factories import NOW_US, TICK_US, make_report, make_sample
    from warehouse.ledger_copy import SQL_CELLS, copy_ledger
    from warehouse.totals import ledger_totals

    wh = Warehouse(stack.settings(f"t_{unique_name}"))

    def upto(version: int) -> None:
        monkeypatch.setattr(migrate_module, "available", lambda: everything[:version])
        migrate(wh)

    try:
        everything = available()
        upto(6)
        wh.insert(
            "usage_ledger",
            (
                *_SAMPLE_COLUMNS[:4],
                "cluster",
                *_SAMPLE_COLUMNS[4:],
                "node_id",
                "boot_id",
                "seq",
                "source_partition",
                "source_offset",
                "late",
            ),
            [
                (
                    f"GPU-{g}",
                    T0_US + t * TICK_US,
                    T0_US + (t + 1) * TICK_US,
                    g,
                    "sc1",
                    "H100",
                    "aurora-labs",
                    "job-1",
                    7,
                    1,
                    0,
                    2,
                    3,
                    "node-0004",
                    "b1",
                    0,
                    1,
                    5,
                    t,
                )
                for t in range(2)
                for g in range(2)
            ],
        )
        upto(7)
        wh.insert(
            "usage_ledger_reports",
            (*_REPORT_COLUMNS, *_SAMPLE_COLUMNS, "late"),
            [
                (
                    "node-0007",
                    "b1",
                    0,
                    "sc1",
                    T0_US,
                    T0_US + TICK_US,
                    0,
                    0,
                    ["GPU-a"],
                    [T0_US],
                    [T0_US + TICK_US],
                    [0],
                    ["H100"],
                    ["aurora-labs"],
                    ["job-1"],
                    [10**7],
                    [1],
                    [0],
                    [2],
                    [3],
                    [0],
                )
            ],
        )
        upto(8)
        wh.insert("usage_ledger_packed", _PACKED_COLUMNS, [_packed_row("node-0008", 4, 3)])
        upto(12)
        big = _packed_row("node-0012", 65, 1)
        assert SQL_CELLS < 65 * 65  # converted in Python
        wh.insert("usage_ledger_packed", _PACKED_COLUMNS, [big, _packed_row("node-0012b", 2, 2)])
        upto(13)

        report = make_report([make_sample(T0_US + 10**7, gpu_uuid="GPU-b")], seq=1)
        report["node_id"] = "node-0013"
        message = SourceMessage("usage", 0, 1, None, ReportCodec().encode(report), NOW_US)
        outcome = FastPartitionProcessor(
            PartitionState("usage", 0), ProcessorSettings(lateness_us=10**12)
        ).process([message])
        wh.insert_native(LEDGER_TABLE, LEDGER_COLUMNS, bytes(outcome.ledger), outcome.ledger_rows)

        def per_node() -> list[tuple]:
            return wh.execute(
                "SELECT node_id, count(), sum(allocated_us), groupUniqArray(tenant_id) "
                "FROM usage_ledger GROUP BY node_id ORDER BY node_id"
            )

        want = [
            ("node-0004", 4, 28, ["aurora-labs"]),
            ("node-0007", 1, 10**7, ["aurora-labs"]),
            ("node-0008", 12, sum(1000 + i for i in range(12)), ["aurora-labs", "borealis-ai"]),
            ("node-0012", 65, sum(1000 + i for i in range(65)), ["aurora-labs", "borealis-ai"]),
            ("node-0012b", 4, sum(1000 + i for i in range(4)), ["aurora-labs", "borealis-ai"]),
            ("node-0013", 1, 10_000_000, ["aurora-labs"]),
        ]
        got = [(n, c, s, sorted(t)) for n, c, s, t in per_node()]
        assert got == want
        # Sample by sample: the holding and the tick each packed sample named by position.
        assert wh.execute(
            "SELECT gpu_uuid, tenant_id, tick_start_us, allocated_us FROM usage_ledger "
            "WHERE node_id = 'node-0008' AND gpu_uuid = 'GPU-1' ORDER BY tick_start_us"
        ) == [("GPU-1", "aurora-labs", T0_US + t * TICK_US, 1001 + 4 * t) for t in range(3)]
        totals = ledger_totals(wh)
        assert copy_ledger(wh) == 6  # (table, month) steps: 0004, 0007, each packed table twice
        assert [(n, c, s, sorted(t)) for n, c, s, t in per_node()] == want
        assert ledger_totals(wh) == totals
    finally:
        wh.drop_database()
        wh.close()


def test_migration_0009_keeps_old_state_rows_and_can_run_again(stack, unique_name, monkeypatch):
    """Old partition state rows read "nothing closed" until their worker writes again; a
    0009 that failed after adding its column (18.16 has no ADD COLUMN IF NOT EXISTS) runs
    again to the end."""
    wh = Warehouse(stack.settings(f"t_{unique_name}"))
    try:
        everything = available()
        monkeypatch.setattr(migrate_module, "available", lambda: everything[:8])
        migrate(wh)
        wh.insert(
            "partition_state",
            (
                "topic",
                "partition",
                "applied_offset",
                "accepted_reports",
                "accepted_samples",
                "duplicate_reports",
                "late_reports",
                "rejected_reports",
                "open_gaps",
                "state",
                "written_at",
            ),
            [("usage", 0, 41, 1, 1, 0, 0, 0, 0, b"", datetime(2026, 11, 1, tzinfo=UTC))],
        )
        monkeypatch.setattr(migrate_module, "available", lambda: everything[:9])
        assert [m.version for m in migrate(wh)] == [9]
        assert wh.execute(
            "SELECT applied_offset, toUInt64(windows_closed_before) FROM pipeline_progress"
        ) == [(41, 0)]
        # As if 0009 had failed after its ALTER: it is applied again, to the end.
        wh.execute("ALTER TABLE schema_migrations DELETE WHERE version = 9")
        deadline = time.monotonic() + 30
        while wh.execute("SELECT count() FROM schema_migrations WHERE version = 9") != [(0,)]:
            assert time.monotonic() < deadline, "the mutation did not finish"
            time.sleep(0.2)
        assert [m.version for m in migrate(wh)] == [9]
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {wh.settings.database}")
        wh.close()


def test_finance_user_reads_only_its_databases_and_cannot_lift_its_limits(
    local_stack, stack, warehouse
):
    """Every way out that readonly=2 left open is refused: per-query settings (its memory
    limit), other databases, and the table functions file(), url() and remote()."""
    from clickhouse_driver import Client
    from clickhouse_driver.errors import ServerException

    from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER

    other = Warehouse(stack.settings("t_not_finance"))
    other.ensure_database()
    other.execute("CREATE TABLE IF NOT EXISTS secrets (x UInt8) ENGINE = Memory")
    local_stack.allow_finance(warehouse.settings.database)
    finance = Client(
        "127.0.0.1",
        port=stack.clickhouse_port,
        user=FINANCE_USER,
        password=FINANCE_PASSWORD,
        database=warehouse.settings.database,
    )
    try:
        assert finance.execute("SELECT count() FROM usage_by_minute") == [(0,)]
        databases = {name for (name,) in finance.execute("SHOW DATABASES")}
        assert warehouse.settings.database in databases and "t_not_finance" not in databases
        refused = {
            "SET max_memory_usage = 99999999999": 164,
            "SELECT * FROM numbers(2)": 164,
            "SELECT * FROM file('x.csv', 'CSV', 'a String')": 164,
            f"SELECT * FROM url('http://127.0.0.1:{stack.clickhouse_http_port}/?query=SELECT+1',"
            " 'CSV', 'a String')": 164,
            f"SELECT * FROM remote('127.0.0.1:{stack.clickhouse_port}', system.one)": 164,
            "SELECT count() FROM t_not_finance.secrets": 291,  # ACCESS_DENIED
        }
        for sql, code in refused.items():
            with pytest.raises(ServerException) as error:
                finance.execute(sql)
            assert error.value.code == code, sql
        # A per-query setting, as a tool sends it: the native protocol ignores it (the
        # limit stays), and HTTP refuses it.
        limit = "SELECT value FROM system.settings WHERE name = %(n)s"
        assert finance.execute(
            limit, {"n": "max_memory_usage"}, settings={"max_memory_usage": 99999999999}
        ) == [("4000000000",)]
        assert finance.execute(limit, {"n": "readonly"}, settings={"readonly": 0}) == [("1",)]
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{stack.clickhouse_http_port}/?user={FINANCE_USER}"
            f"&password={FINANCE_PASSWORD}&max_memory_usage=99999999999",
            data=b"SELECT 1",
        )
        with pytest.raises(urllib.error.HTTPError) as http_error:
            urllib.request.urlopen(request, timeout=10)
        assert b"Code: 164" in http_error.value.read()
    finally:
        finance.disconnect()
        other.execute("DROP DATABASE IF EXISTS t_not_finance")
        other.close()


def test_the_readme_lists_every_finance_view_with_its_real_columns(warehouse):
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## For finance", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| .* \| `([a-z_, 0-9]+)` \|$", section, flags=re.M)
    assert len(rows) >= 16
    for view, columns in rows:
        described = [r[0] for r in warehouse.execute(f"DESCRIBE TABLE {view}")]
        assert columns.split(", ") == described, view


def _expected_totals(outcomes) -> dict:
    """Minute totals (final partials plus adjustments) of a run's outcomes."""
    from warehouse.totals import add_totals

    final: dict = {}
    for out in outcomes:
        for r in out.rollups:
            if r.key not in final or final[r.key][0] <= r.version:
                final[r.key] = (r.version, r.sums)
    totals: dict = {}
    fields = ("allocated_us", "busy_us", "unhealthy_us", "energy_mj", "sample_count")
    for key, (_, sums) in final.items():
        add_totals(totals, tuple(key), dict(zip(fields, sums, strict=True)))
    for out in outcomes:
        for a in out.adjustments:
            add_totals(totals, tuple(a.key), dict(zip(fields, a.sums, strict=True)))
    return totals


def test_upgrading_from_0008_with_data_fills_the_hour_and_day_rollups_and_resumes_exactly(
    stack, unique_name, monkeypatch
):
    """A warehouse and a worker of migration 0008 (minute rollups only, snapshot format 2)
    are upgraded mid-stream: the migration fills the hour and day rollups from the minute
    rows, with progress, the worker's next owner rebuilds its open hour and day windows
    from them, and after the rest of the stream every grain is exact."""
    import json
    import random
    import zlib

    from core.units import utc_datetime
    from streams.contract import ProcessorSettings
    from streams.output.sink import ADJUSTMENT_COLUMNS, ROLLUP_COLUMNS
    from streams.processing.hotpath.processor import FastPartitionProcessor
    from tests.factories import messages, midnight_fleet
    from tests.unit.test_grains import cut
    from warehouse.backfill import backfill_coarse
    from warehouse.totals import grain_differences

    wh = Warehouse(stack.settings(f"t_{unique_name}"))
    settings = ProcessorSettings(lateness_us=3 * 60_000_000, emit_ledger=False)
    frames = messages(midnight_fleet(11, reports=300), partition=4)
    half = len(frames) // 2
    try:
        everything = available()
        monkeypatch.setattr(migrate_module, "available", lambda: everything[:8])
        migrate(wh)
        # A 0008 worker: minute rows and adjustments, then its state (format 2).
        old = FastPartitionProcessor(PartitionState("usage", 4, late_folds_after=None), settings)
        outcomes = [old.process(batch) for batch in cut(frames[:half], random.Random(3))]
        now = datetime(2026, 11, 1, tzinfo=UTC)
        for out in outcomes:
            wh.insert(
                "usage_rollup_partials",
                ROLLUP_COLUMNS,
                [
                    (*r.key[:3], utc_datetime(r.key.window_start_us), 4, *r.sums, r.version, now)
                    for r in out.rollups
                ],
            )
            wh.insert(
                "usage_adjustments",
                ADJUSTMENT_COLUMNS,
                [
                    (*a.key[:3], utc_datetime(a.key.window_start_us), 4, a.offset, *a.sums, now)
                    for a in out.adjustments
                ],
            )
        doc = json.loads(zlib.decompress(old.state.to_snapshot()))
        del doc["coarse"]
        doc["format"] = 2
        wh.insert(
            "partition_state",
            (
                "topic",
                "partition",
                "applied_offset",
                "accepted_reports",
                "accepted_samples",
                "duplicate_reports",
                "late_reports",
                "rejected_reports",
                "open_gaps",
                "state",
                "written_at",
            ),
            [
                (
                    "usage",
                    4,
                    old.state.applied_offset,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    zlib.compress(json.dumps(doc).encode()),
                    now,
                )
            ],
        )
        assert any(out.adjustments for out in outcomes)

        seen: list[tuple[int, int]] = []
        monkeypatch.setattr(migrate_module, "available", lambda: everything)
        applied = migrate(wh, progress=lambda done, total, day: seen.append((done, total)))
        assert [m.version for m in applied] == [v for v in range(9, len(everything) + 1)]
        # The day before midnight and the day after (0011), then their month (0016).
        assert seen == [(1, 2), (2, 2), (1, 1)]
        assert grain_differences(wh, _expected_totals(outcomes)) == EXACT_AT_EVERY_GRAIN
        # Filling again (a migration retried: no worker starts before it is recorded)
        # rewrites the same rows.
        assert backfill_coarse(wh) == 2
        assert grain_differences(wh, _expected_totals(outcomes)) == EXACT_AT_EVERY_GRAIN

        # The next owner of the partition: its open hour, day and month windows come back.
        state = load_state(wh, "usage", 4)
        assert not state.unseeded and state.coarse == old.state.coarse
        new = FastPartitionProcessor(state, settings)
        sink = WarehouseSink(wh)
        for batch in cut(frames[half:], random.Random(4)):
            out = new.process(batch)
            outcomes.append(out)
            sink.write(out, new.state)
        assert grain_differences(wh, _expected_totals(outcomes)) == EXACT_AT_EVERY_GRAIN
    finally:
        wh.drop_database()
        wh.close()


def test_upgrading_from_0015_with_data_fills_the_month_rollups_and_resumes_exactly(
    stack, unique_name, monkeypatch
):
    """A warehouse and a worker of migration 0015 (minute, hour and day rollups, snapshot
    format 3) are upgraded at a month's end, mid-stream: migration 0016 fills the month
    rollups from the day rows, the next owner rebuilds its open month window from the
    closed days and its open ones, and after the rest of the stream every grain is exact."""
    import json
    import random
    import zlib

    from streams.contract import ProcessorSettings
    from streams.output import sink as sink_module
    from streams.output.sink import state_row
    from streams.processing.hotpath.processor import FastPartitionProcessor
    from tests.factories import MONTH_MIDNIGHT, messages, midnight_fleet
    from tests.unit.test_grains import cut
    from warehouse.backfill import backfill_months
    from warehouse.totals import grain_differences

    wh = Warehouse(stack.settings(f"t_{unique_name}"))
    settings = ProcessorSettings(lateness_us=3 * 60_000_000, emit_ledger=False)
    stamped = MONTH_MIDNIGHT + 86_400_000_000
    frames = messages(
        midnight_fleet(13, reports=300, midnight=MONTH_MIDNIGHT), partition=4, timestamp_us=stamped
    )
    half = len(frames) // 2
    try:
        everything = available()
        monkeypatch.setattr(migrate_module, "available", lambda: everything[:15])
        migrate(wh)
        # A 0015 worker: every grain but the month, then its state (format 3).
        old = FastPartitionProcessor(PartitionState("usage", 4, late_folds_after=None), settings)
        without_months = {g: t for g, t in sink_module.COARSE_TABLES.items() if g != "month"}
        monkeypatch.setattr(sink_module, "COARSE_TABLES", without_months)
        old_sink = WarehouseSink(wh)
        outcomes = []
        for batch in cut(frames[:half], random.Random(5)):
            out = old.process(batch)
            out.node_rows = []  # node progress came with migration 0019
            outcomes.append(out)
            doc = json.loads(zlib.decompress(old.state.to_snapshot()))
            doc["format"], doc["coarse"] = 3, {g: doc["coarse"][g] for g in ("hour", "day")}
            old_sink.write_many([(out, state_row(old.state, snapshot=False))])
            _store_as_before_0022(wh, old.state, zlib.compress(json.dumps(doc).encode()))
        monkeypatch.undo()
        # Stopped after the month closed, with the next one open.
        assert old.state.closed_before_us > MONTH_MIDNIGHT
        assert {k.window_start_us for k in old.state.coarse["month"]} == {MONTH_MIDNIGHT}
        assert any(out.adjustments for out in outcomes)

        seen: list[tuple[int, int]] = []
        applied = migrate(wh, progress=lambda done, total, month: seen.append((done, total)))
        assert [m.version for m in applied] == [v for v in range(16, len(everything) + 1)]
        assert seen == [(1, 2), (2, 2)]  # November and December
        assert grain_differences(wh, _expected_totals(outcomes)) == EXACT_AT_EVERY_GRAIN
        assert backfill_months(wh) == 2  # a retried migration rewrites the same rows
        assert grain_differences(wh, _expected_totals(outcomes)) == EXACT_AT_EVERY_GRAIN

        state = load_state(wh, "usage", 4)
        assert not state.unseeded and state.coarse == old.state.coarse
        new = FastPartitionProcessor(state, settings)
        new_sink = WarehouseSink(wh)
        for batch in cut(frames[half:], random.Random(6)):
            out = new.process(batch)
            outcomes.append(out)
            new_sink.write(out, new.state)
        assert grain_differences(wh, _expected_totals(outcomes)) == EXACT_AT_EVERY_GRAIN
    finally:
        wh.drop_database()
        wh.close()


def test_a_worker_upgraded_after_a_kill_replays_what_the_old_one_wrote_exactly(
    stack, unique_name, monkeypatch
):
    """A worker that made every late piece late at every grain (snapshot format 4) is
    killed after writing a batch's rows but before its state; the upgraded worker that
    replays the batch must decide as the old one did, or usage it already wrote as an
    hour, day or month adjustment would be added to the open window's partial as well.
    The state it loads learns from the warehouse how far the old worker wrote."""
    import copy
    import json
    import random
    import zlib

    from streams.contract import ProcessorSettings
    from streams.output.sink import state_row
    from streams.processing.hotpath.processor import FastPartitionProcessor
    from tests.factories import MIDNIGHT, messages, midnight_fleet
    from tests.unit.test_grains import cut
    from warehouse.totals import grain_differences

    wh = Warehouse(stack.settings(f"t_{unique_name}"))
    settings = ProcessorSettings(lateness_us=3 * 60_000_000, emit_ledger=False)
    frames = messages(
        midnight_fleet(17, reports=300), partition=4, timestamp_us=MIDNIGHT + 86_400_000_000
    )
    batches = list(cut(frames, random.Random(8)))

    def format_4(state: PartitionState) -> bytes:
        doc = json.loads(zlib.decompress(state.to_snapshot()))
        doc["format"] = 4
        del doc["late_folds_after"]
        return zlib.compress(json.dumps(doc).encode())

    try:
        migrate(wh)
        old = FastPartitionProcessor(PartitionState("usage", 4, late_folds_after=None), settings)
        sink = WarehouseSink(wh)
        written = []
        for n, batch in enumerate(batches):
            upgraded = FastPartitionProcessor(copy.deepcopy(old.state), settings)
            upgraded.state.late_folds_after = -1
            out = old.process(batch)
            folded = upgraded.process(batch)
            if n >= len(batches) // 3 and folded.coarse_adjustments != out.coarse_adjustments:
                killed = out
                break
            sink.write_many([(out, state_row(old.state, snapshot=False))])
            _store_as_before_0022(wh, old.state, format_4(old.state))
            written.append(out)
        else:
            pytest.fail("no batch had a late piece for an open coarse window")

        real_insert = wh.insert

        def killed_before_the_state(table, *args, **kwargs):
            if table == "partition_state":
                raise ConnectionError("killed")
            return real_insert(table, *args, **kwargs)

        monkeypatch.setattr(wh, "insert", killed_before_the_state)
        with pytest.raises(ConnectionError):
            sink.write_many([(killed, state_row(old.state, snapshot=False))])
        monkeypatch.undo()

        state = load_state(wh, "usage", 4)
        assert state.applied_offset == written[-1].applied_offset
        assert state.late_folds_after == max(a.offset for a in killed.adjustments)
        new = FastPartitionProcessor(state, settings)
        replayed = []
        for batch in cut(frames[state.applied_offset + 1 :], random.Random(9)):
            out = new.process(batch)
            replayed.append(out)
            sink.write(out, new.state)
        assert grain_differences(wh, _expected_totals(written + replayed)) == EXACT_AT_EVERY_GRAIN
        # Past what the old worker wrote, late pieces join the open windows.
        assert new.state.folds_late(frames[-1].offset)
        assert load_state(wh, "usage", 4).late_folds_after == state.late_folds_after
    finally:
        wh.drop_database()
        wh.close()


def test_reconciliation_finds_a_coarse_rollup_that_is_not_the_sum_of_the_finer_ones(warehouse):
    """compare_grains_day: hours against their minutes, days against their hours; an hour
    partial that disagrees is found and named, counter by counter."""
    from streams.output.sink import ROLLUP_COLUMNS
    from warehouse.backfill import fill_day
    from warehouse.totals import compare_grains_day

    day_us = T0_US - T0_US % 86_400_000_000
    at = datetime.fromtimestamp(T0_US // 1_000_000, tz=UTC)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    warehouse.insert(
        "usage_rollup_partials",
        ROLLUP_COLUMNS,
        [("aurora-labs", "H100", "sc1", at, p, 60_000_000, 1, 0, 5, 6, 10, now) for p in (0, 1)],
    )
    fill_day(warehouse, day_us)
    clean = compare_grains_day(warehouse, day_us)
    assert (clean.keys, clean.differing) == (2, 0)  # one hour key, one day key
    hour = at.replace(minute=0, second=0)
    warehouse.insert(
        "usage_hour_partials",
        [c if c != "window_start" else "hour_start" for c in ROLLUP_COLUMNS],
        [("aurora-labs", "H100", "sc1", hour, 1, 60_000_001, 1, 0, 5, 6, 11, now)],
    )
    found = compare_grains_day(warehouse, day_us)
    assert found.differing == 2  # the hour against its minutes, the day against its hours
    (first, *_) = found.first
    assert first[:4] == ("aurora-labs", "H100", "sc1", int(hour.timestamp()) * 1_000_000)
    assert first[4]["allocated_us"] == (120_000_000, 120_000_001)


def test_migration_0012_moves_the_packed_ledger_aside_and_can_run_again(
    stack, unique_name, monkeypatch
):
    """The packed ledger of 0008 is renamed and a time-sorted one takes its name; a 0012
    that failed after its RENAME (18.16 has no RENAME IF EXISTS) runs again to the end."""
    wh = Warehouse(stack.settings(f"t_{unique_name}"))
    try:
        everything = available()
        monkeypatch.setattr(migrate_module, "available", lambda: everything[:11])
        migrate(wh)
        monkeypatch.setattr(migrate_module, "available", lambda: everything[:12])
        assert [m.version for m in migrate(wh)] == [12]
        sorting = wh.execute(
            "SELECT name, sorting_key FROM system.tables WHERE database = %(d)s "
            "AND name LIKE 'usage_ledger_packed%%' ORDER BY name",
            {"d": wh.settings.database},
        )
        assert sorting == [
            ("usage_ledger_packed", "intDiv(interval_start_us, 3600000000), node_id, boot_id, seq"),
            ("usage_ledger_packed_0008", "node_id, boot_id, seq"),
        ]
        wh.execute("ALTER TABLE schema_migrations DELETE WHERE version = 12")
        deadline = time.monotonic() + 30
        while wh.execute("SELECT count() FROM schema_migrations WHERE version = 12") != [(0,)]:
            assert time.monotonic() < deadline, "the mutation did not finish"
            time.sleep(0.2)
        assert [m.version for m in migrate(wh)] == [12]
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {wh.settings.database}")
        wh.close()


def test_the_readme_ledger_queries_answer_beside_a_report_of_the_largest_size_accepted(
    stack, warehouse
):
    """One valid report of 65,536 distinct GPUs (the validation bound on samples) for one
    tenant: the README's ledger queries answer on the real server within its 4 GB limit
    (the packed ledger's view needed 4 GiB for 8,192 GPUs), and a count for another tenant
    reads only that tenant's rows, not the big report's."""
    import re
    from pathlib import Path

    from clickhouse_driver import Client

    from core.identity import ReportLimits
    from schemas import ReportCodec
    from streams.contract import ProcessorSettings
    from streams.output.native import LEDGER_COLUMNS, LEDGER_TABLE
    from streams.processing.hotpath.processor import FastPartitionProcessor
    from tests.factories import NOW_US, make_report, make_sample

    day_us = 1_790_812_800_000_000  # 2026-10-01, the README's day
    gpus = ReportLimits().max_samples
    big = make_report(
        [
            make_sample(day_us + 3_600_000_000, gpu_uuid=f"GPU-{g:05d}", gpu_index=g)
            for g in range(gpus)
        ]
    )
    small = make_report([make_sample(day_us, tenant_id="borealis-ai")], seq=1)
    codec = ReportCodec()
    frames = [
        SourceMessage("usage", 0, i, None, codec.encode(r), NOW_US)
        for i, r in enumerate((big, small))
    ]
    outcome = FastPartitionProcessor(
        PartitionState("usage", 0), ProcessorSettings(lateness_us=10**12)
    ).process(frames)
    assert outcome.accepted_samples == gpus + 1 and not outcome.rejections
    warehouse.insert_native(
        LEDGER_TABLE, LEDGER_COLUMNS, bytes(outcome.ledger), outcome.ledger_rows
    )

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## For finance", 1)[1].split("\n## ", 1)[0]
    queries = [
        q for q in re.findall(r"```sql\n(.*?)```", section, flags=re.S) if "usage_ledger" in q
    ]
    assert len(queries) == 2
    for sql in queries:
        rows = warehouse.execute(sql.strip().rstrip(";"))
        assert len(rows) == 20 and rows[0][0] == big["node_id"], sql

    client = Client(
        "127.0.0.1",
        port=stack.clickhouse_port,
        database=warehouse.settings.database,
        password=stack.clickhouse_password,
    )
    try:
        db = warehouse.settings.database  # in the text, to find this query in the log
        count = f"SELECT count() FROM {db}.usage_ledger WHERE tenant_id = 'borealis-ai'"
        assert client.execute(count, settings={"log_queries": 1}) == [(1,)]
        # The finish entry is queued after the result is sent: flush until it is there.
        deadline = time.monotonic() + 30
        while True:
            client.execute("SYSTEM FLUSH LOGS")
            finished = client.execute(
                "SELECT read_rows FROM system.query_log WHERE type = 2 AND query = %(q)s",
                {"q": count},
            )
            if finished or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        ((read_rows,),) = finished
        assert read_rows < gpus  # one granule of the table, not the big report's rows
    finally:
        client.disconnect()


def test_the_fast_daily_comparison_agrees_with_the_detailed_one_and_misses_nothing(
    warehouse, monkeypatch
):
    """compare_day (reconcile's one pass a day: keys numbered, the ledger without FINAL
    when it holds no replayed copy) counts what compare_ledger_day and compare_grains_day
    count, still when a replayed copy awaits its merge, and hands every kind of
    difference to them: a ledger sample missing, an hour rollup off, a key it has no
    number for."""

    from schemas import ReportCodec
    from streams.contract import ProcessorSettings
    from streams.output.native import LEDGER_COLUMNS, LEDGER_TABLE
    from streams.output.sink import ROLLUP_COLUMNS
    from streams.processing.hotpath.processor import FastPartitionProcessor
    from tests.factories import NOW_US, TICK_US, make_report, make_sample
    from tests.mutations import mutate
    from warehouse.totals import compare_day, compare_grains_day, compare_ledger_day, period_keys

    day_us = T0_US - T0_US % 86_400_000_000
    codec = ReportCodec()
    frames = []
    for n in range(40):
        tenant, sku = ("aurora-labs", "H100") if n % 3 else ("borealis-ai", "B200")
        samples = [
            make_sample(
                T0_US + (n * 6 + t) * TICK_US,
                tenant_id=tenant,
                sku=sku,
                gpu_uuid=f"GPU-{g}",
                gpu_index=g,
                energy_mj=n + g,
            )
            for t in range(6)
            for g in range(2)
        ]
        report = make_report(samples, seq=n, node_id=f"sc1-node-{n % 4}")
        frames.append(SourceMessage("usage", 0, n, None, codec.encode(report), NOW_US))
    processor = FastPartitionProcessor(
        PartitionState("usage", 0), ProcessorSettings(lateness_us=10**12)
    )
    sink = WarehouseSink(warehouse)
    outcome = processor.process(frames)
    sink.write(outcome, processor.state)
    keys = period_keys(warehouse, day_us, day_us + 86_400_000_000)
    assert keys == ["aurora-labs/H100/sc1", "borealis-ai/B200/sc1"]

    def both(fast=True):
        if fast:
            return compare_day(warehouse, day_us, keys)
        return compare_ledger_day(warehouse, day_us), compare_grains_day(warehouse, day_us)

    fast, detailed = both(), both(fast=False)
    assert [(c.keys, c.differing) for c in fast] == [(c.keys, c.differing) for c in detailed]
    assert fast[0].keys > 20 and fast[0].differing == fast[1].differing == 0
    # A replayed copy of the ledger awaiting its merge: counted once.
    warehouse.insert_native(
        LEDGER_TABLE, LEDGER_COLUMNS, bytes(outcome.ledger), outcome.ledger_rows
    )
    assert [(c.keys, c.differing) for c in both()] == [(fast[0].keys, 0), (fast[1].keys, 0)]

    # An hour rollup off by one.
    hour = datetime.fromtimestamp((T0_US - T0_US % 3_600_000_000) // 1_000_000, tz=UTC)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    columns = [c if c != "window_start" else "hour_start" for c in ROLLUP_COLUMNS]
    warehouse.insert(
        "usage_hour_partials",
        columns,
        [("aurora-labs", "H100", "sc1", hour, 0, 1, 0, 0, 0, 0, 10**9, now)],
    )
    ledger, grains = both()
    assert ledger.differing == 0 and grains.differing == 2 and grains.first
    mutate(warehouse, "ALTER TABLE usage_hour_partials DELETE WHERE version = 1000000000")
    assert both()[1].differing == 0
    # A key the period's list does not number: compared in detail.
    from warehouse import totals

    detailed_days = []
    monkeypatch.setattr(
        totals, "compare_ledger_day", lambda *a: detailed_days.append(a) or compare_ledger_day(*a)
    )
    ledger, _ = compare_day(warehouse, day_us, keys)
    assert not detailed_days
    ledger, _ = compare_day(warehouse, day_us, keys[:1])
    assert detailed_days and ledger.differing == 0 and ledger.keys == fast[0].keys
    # A sample missing from the ledger.
    mutate(warehouse, "ALTER TABLE usage_ledger_holdings DELETE WHERE seq = 7")
    ledger, _ = both()
    assert ledger.differing > 0 and ledger.first[0][0] == "aurora-labs"


def test_reconcile_remembers_a_pass_only_while_the_data_it_read_is_unchanged(
    local_stack, stack, warehouse
):
    """A period that passed is not compared again over the same table parts; any insert
    (or merge, or mutation) makes it compare again, --recheck always does, a difference
    is never remembered, and a read-only user compares in full without failing."""
    from billing.reconcile import reconcile
    from schemas import ReportCodec
    from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER
    from streams.contract import ProcessorSettings
    from streams.output.sink import ROLLUP_COLUMNS
    from streams.processing.hotpath.processor import FastPartitionProcessor
    from tests.factories import NOW_US, TICK_US, make_report, make_sample

    codec = ReportCodec()
    frames = [
        SourceMessage(
            "usage",
            0,
            n,
            None,
            codec.encode(
                make_report(
                    [make_sample(T0_US + n * 6 * TICK_US + t * TICK_US) for t in range(6)], seq=n
                )
            ),
            NOW_US,
        )
        for n in range(5)
    ]
    processor = FastPartitionProcessor(
        PartitionState("usage", 0), ProcessorSettings(lateness_us=10**12)
    )
    WarehouseSink(warehouse).write(processor.process(frames), processor.state)
    period = "2026-11"

    def text(**kwargs) -> str:
        report = reconcile(warehouse, period, **kwargs)
        return "\n".join(report.lines)

    first = text()
    assert "OK   5 windows, every counter equal" in first and "compared earlier" not in first
    second = text()
    assert "OK   5 windows, every counter equal" in second and "compared earlier" in second
    assert "compared earlier" not in text(recheck=True)

    finance = Warehouse(
        ClickHouseSettings(
            port=stack.clickhouse_port,
            user=FINANCE_USER,
            password=FINANCE_PASSWORD,
            database=warehouse.settings.database,
        )
    )
    local_stack.allow_finance(warehouse.settings.database)
    try:
        assert "compared earlier" in "\n".join(reconcile(finance, period).lines)
        assert "compared earlier" not in "\n".join(reconcile(finance, period, recheck=True).lines)
    finally:
        finance.close()

    # A minute partial the ledger does not hold: compared again, found, not remembered.
    at = datetime.fromtimestamp(T0_US // 1_000_000, tz=UTC)
    warehouse.insert(
        "usage_rollup_partials",
        ROLLUP_COLUMNS,
        [
            (
                "aurora-labs",
                "H100",
                "sc1",
                at,
                5,
                1,
                0,
                0,
                0,
                0,
                1,
                datetime(2026, 11, 2, tzinfo=UTC),
            )
        ],
    )
    for _ in range(2):
        found = text()
        assert "FAIL 1 differences over 5 windows" in found and "compared earlier" not in found


def test_migration_0020_repartitions_the_ledger_by_its_key_with_nothing_lost(
    stack, unique_name, monkeypatch
):
    """A ledger of several months, one report written twice (a replay), moved aside and
    copied into the table partitioned by interval_start_us: the view shows every sample
    once, as before; a question about one day reads its month's part alone; and a 0020
    that failed after its RENAME runs again to the same rows."""
    from clickhouse_driver import Client

    from streams.output.native import LEDGER_COLUMNS, LEDGER_TABLE

    wh = Warehouse(stack.settings(f"t_{unique_name}"))
    try:
        everything = available()
        monkeypatch.setattr(migrate_module, "available", lambda: everything[:19])
        migrate(wh)
        for month_s in (1_785_542_400, 1_788_220_800, 1_790_812_800):  # Aug, Sep, Oct 2026
            rows = []
            for day in range(28):
                start_us = (month_s + day * 86_400 + 30) * 1_000_000
                end_us = start_us + 10_000_000
                report = ("n1", "b1", month_s + day, "sc1", start_us, end_us, 0, day)
                holding = ("GPU-a", 0, "H100", "aurora-labs", "job")
                samples = ([start_us], [end_us], [10_000_000], [day], [0], [7], [1], [0])
                rows.append((*report, *holding, *samples))
            wh.insert(LEDGER_TABLE, LEDGER_COLUMNS, rows)  # one part per month
        wh.insert(LEDGER_TABLE, LEDGER_COLUMNS, rows[:1])  # a replayed report
        sample = "SELECT seq, tick_start_us, busy_us, energy_mj FROM usage_ledger ORDER BY seq"
        before = wh.execute(sample)
        assert len(before) == 84

        monkeypatch.setattr(migrate_module, "available", lambda: everything[:20])
        assert [m.version for m in migrate(wh)] == [20]
        keys = wh.execute(
            "SELECT name, partition_key FROM system.tables WHERE database = %(d)s "
            "AND name LIKE 'usage_ledger_holdings%%' ORDER BY name",
            {"d": wh.settings.database},
        )
        assert keys == [
            (
                "usage_ledger_holdings",
                "toYYYYMM(toDateTime(intDiv(interval_start_us, 1000000), 'UTC'))",
            ),
            ("usage_ledger_holdings_0013", "toYYYYMM(interval_start)"),
        ]
        assert wh.execute(sample) == before
        partitions = wh.execute(
            "SELECT DISTINCT partition FROM system.parts WHERE database = %(d)s "
            "AND table = 'usage_ledger_holdings' AND active ORDER BY partition",
            {"d": wh.settings.database},
        )
        assert partitions == [("202608",), ("202609",), ("202610",)]

        client = Client(
            "127.0.0.1",
            port=stack.clickhouse_port,
            database=wh.settings.database,
            password=stack.clickhouse_password,
        )
        try:
            day = client.execute(
                "SELECT seq FROM usage_ledger_holdings FINAL WHERE tenant_id = 'aurora-labs' "
                "AND sku = 'H100' AND interval_start_us >= 1790812800000000 "
                "AND interval_start_us < 1790899200000000"
            )
            assert day == [(1_790_812_800,)]
            assert client.last_query.progress.rows <= 28  # October's part, not the others
        finally:
            client.disconnect()

        wh.execute("ALTER TABLE schema_migrations DELETE WHERE version = 20")
        deadline = time.monotonic() + 30
        while wh.execute("SELECT count() FROM schema_migrations WHERE version = 20") != [(0,)]:
            assert time.monotonic() < deadline, "the mutation did not finish"
            time.sleep(0.2)
        assert [m.version for m in migrate(wh)] == [20]
        assert wh.execute(sample) == before
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {wh.settings.database}")
        wh.close()
