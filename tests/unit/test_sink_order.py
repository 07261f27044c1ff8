"""The sink's one ordering rule: a partition's state is written only after every other
row of its batch is in ClickHouse (the ledger goes on other threads meanwhile)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from schemas import ReportCodec
from streams.contract import ProcessorSettings, SourceMessage
from streams.output.sink import WarehouseSink, state_row
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.state import PartitionState
from tests.factories import NOW_US, make_report, make_sample
from warehouse.errors import SinkError


class RecordingWarehouse:
    """Records what is inserted, in order; the ledger insert waits for ``release``."""

    def __init__(
        self, ledger_fails: bool = False, driver_fails_on: str = "", ledger_s: float = 0.0
    ) -> None:
        self.ledger_fails = ledger_fails
        self.driver_fails_on = driver_fails_on
        self.ledger_s = ledger_s
        self.release = threading.Event()
        self.calls: list[str] = []
        self.rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def insert(self, table: str, columns: Any, rows: Any) -> int:
        rows = list(rows)
        if rows:
            with self._lock:
                self.calls.append(table)
                self.rows[table] = self.rows.get(table, 0) + len(rows)
        if table == self.driver_fails_on:
            self.release.set()
            raise SinkError(f"insert into {table}: connection reset")
        if table == "seq_gaps":
            self.release.set()  # the driver's inserts are done: let the ledger finish
        return len(rows)

    def insert_native(self, table: str, columns: Any, data: bytes, rows: int) -> int:
        if not rows:
            return 0
        assert self.release.wait(10)
        time.sleep(self.ledger_s)
        if self.ledger_fails:
            raise SinkError("insert into ledger: HTTP 500")
        with self._lock:
            self.calls.append(table)
        return rows


def _batch() -> list[tuple[Any, Any]]:
    written = []
    for partition in (0, 1):
        report = make_report([make_sample()], seq=0, node_id=f"sc1-node-{partition}")
        message = SourceMessage("usage", partition, 0, None, ReportCodec().encode(report), NOW_US)
        processor = FastPartitionProcessor(PartitionState("usage", partition), ProcessorSettings())
        outcome = processor.process([message])
        assert outcome.ledger_rows == 1
        written.append((outcome, state_row(processor.state, snapshot=partition == 0)))
    return written


def test_the_state_is_written_last_after_the_ledger_that_ran_beside_the_rest():
    warehouse = RecordingWarehouse()
    WarehouseSink(warehouse).write_many(_batch())  # type: ignore[arg-type]
    # The snapshot taken (partition 0's), then every partition's progress.
    assert warehouse.calls[-2:] == ["partition_snapshots", "partition_state"]
    assert warehouse.rows["partition_snapshots"] == 1
    assert warehouse.rows["partition_state"] == 2
    assert warehouse.calls.count("usage_ledger_holdings") == 2  # one request per half
    assert warehouse.calls.index("usage_rollup_partials") < warehouse.calls.index(
        "usage_ledger_holdings"
    )  # the ledger was still in flight while the driver wrote


def test_a_failed_ledger_insert_leaves_the_state_unwritten():
    warehouse = RecordingWarehouse(ledger_fails=True)
    with pytest.raises(SinkError):
        WarehouseSink(warehouse).write_many(_batch())  # type: ignore[arg-type]
    assert not {"partition_state", "partition_snapshots"} & set(warehouse.calls)
    assert "usage_rollup_partials" in warehouse.calls


def test_a_failed_driver_insert_is_raised_only_once_the_ledger_inserts_have_finished():
    warehouse = RecordingWarehouse(driver_fails_on="usage_rollup_partials", ledger_s=0.2)
    with pytest.raises(SinkError, match="usage_rollup_partials"):
        WarehouseSink(warehouse).write_many(_batch())  # type: ignore[arg-type]
    # Nothing of the failed batch is still being written when its failure surfaces.
    assert warehouse.calls.count("usage_ledger_holdings") == 2
    assert not {"partition_state", "partition_snapshots"} & set(warehouse.calls)
