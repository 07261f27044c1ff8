"""Where each node stands, on the real server: the worker's sink writes node progress,
node_status names the nodes gone silent, and ``meter status`` prints them."""

from __future__ import annotations

import pytest

from meter.status import collect, render
from schemas import ReportCodec
from streams.contract import ProcessorSettings
from streams.output.sink import WarehouseSink
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.state import PartitionState
from tests.factories import NOW_US, make_report, make_sample, messages

pytestmark = pytest.mark.integration

CODEC = ReportCodec()
MINUTE_US = 60_000_000


def test_silent_nodes_are_named_with_when_they_were_last_heard_from(warehouse):
    p = FastPartitionProcessor(PartitionState("usage", 0), ProcessorSettings())
    sink = WarehouseSink(warehouse)
    nodes = [f"sc1-node-{n:05d}" for n in range(30)]
    first = [CODEC.encode(make_report([make_sample()], seq=0, node_id=n)) for n in nodes]
    sink.write(p.process(messages(first)), p.state)
    # Ten minutes later all but two report again; one of the two skipped seq 1 before.
    later = [CODEC.encode(make_report([make_sample()], seq=1, node_id=n)) for n in nodes[2:]]
    second = p.process(messages(later, first_offset=30, timestamp_us=NOW_US + 10 * MINUTE_US))
    sink.write(second, p.state)
    sink.write(second, p.state)  # written twice, as after a crash before the commit

    status = collect(warehouse, silent_after_s=300)
    assert status["nodes"] == 30
    assert [row[0] for row in status["silent"]] == nodes[:2]
    text = "\n".join(render(status))
    assert "nodes: 30 heard from" in text and "silent for more than 5 min" in text
    assert f"  {nodes[0]} boot 11111111 last heard" in text
    assert "none silent" in "\n".join(render(collect(warehouse, silent_after_s=3600)))
    # The batch written twice rewrote the same rows: one row per node.
    assert warehouse.execute("SELECT count() FROM node_status") == [(30,)]
