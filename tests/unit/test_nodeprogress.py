"""Node progress rows (streams/processing/nodeprogress.py): written for the nodes a batch moved, on
both processors, and never for a silent node, not even after the state is reloaded."""

from __future__ import annotations

import pytest

from schemas import ReportCodec
from streams.contract import ProcessorSettings
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.processor import PartitionProcessor
from streams.processing.state import PartitionState
from tests.factories import NOW_US, make_report, make_sample, messages

CODEC = ReportCodec()


def _report(node: str, seq: int) -> bytes:
    return CODEC.encode(make_report([make_sample()], seq=seq, node_id=node))


@pytest.mark.parametrize("kind", [PartitionProcessor, FastPartitionProcessor])
def test_only_the_nodes_a_batch_moved_get_a_row(kind):
    p = kind(PartitionState("usage", 3), ProcessorSettings())
    first = p.process(messages([_report("sc1-node-a", 0), _report("sc1-node-b", 0)]))
    assert [(r.node_id, r.last_seq, r.open_gaps) for r in first.node_rows] == [
        ("sc1-node-a", 0, 0),
        ("sc1-node-b", 0, 0),
    ]
    assert {r.seen_us for r in first.node_rows} == {NOW_US} and first.node_rows[0].version == 1
    # Node b is silent; node a skips seq 1: its row says so.
    later = p.process(messages([_report("sc1-node-a", 2)], first_offset=2, timestamp_us=NOW_US + 9))
    assert [(r.node_id, r.last_seq, r.open_gaps, r.seen_us) for r in later.node_rows] == [
        ("sc1-node-a", 2, 1, NOW_US + 9)
    ]
    # A duplicate moves nothing.
    again = p.process(messages([_report("sc1-node-a", 2)], first_offset=3))
    assert again.node_rows == [] and again.duplicate_reports == 1
    # Reloaded (a restart or a rebalance): the silent node still gets no row.
    reloaded = kind(PartitionState.from_snapshot(p.state.to_snapshot()), ProcessorSettings())
    out = reloaded.process(messages([_report("sc1-node-a", 3)], first_offset=4))
    assert [r.node_id for r in out.node_rows] == ["sc1-node-a"]
    if kind is FastPartitionProcessor:  # the kernels, not the twin, handled every batch
        assert p.batches_to_twin == reloaded.batches_to_twin == 0
