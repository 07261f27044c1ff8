from collections import Counter

from agent.fleet import FleetSpec, build_nodes, fleet_reports
from agent.totals import EmittedTotals
from core.identity import UNALLOCATED, ReportLimits
from schemas import ReportCodec
from streams.processing.validate import validate_report
from tests.factories import NOW_US

SPEC = FleetSpec(nodes=10, gpus_per_node=8, tenants=3, reports_per_node=4)


def test_same_seed_same_bytes_other_seed_other_bytes():
    codec = ReportCodec()
    first = [codec.encode(r) for r in fleet_reports(SPEC)]
    assert first == [codec.encode(r) for r in fleet_reports(SPEC)]
    other = FleetSpec(nodes=10, gpus_per_node=8, tenants=3, reports_per_node=4, seed=8)
    assert first != [codec.encode(r) for r in fleet_reports(other)]


def test_every_report_is_valid_and_seqs_tile_time_per_node():
    last_end: dict[str, int] = {}
    for report in fleet_reports(SPEC):
        validate_report(report, ReportLimits(), NOW_US)
        node = report["node_id"]
        if node in last_end:
            assert report["interval_start_us"] == last_end[node]
        last_end[node] = report["interval_end_us"]
        assert len(report["samples"]) == SPEC.gpus_per_node * SPEC.ticks_per_report


def test_gpu_time_sums_to_wall_time_times_gpus():
    totals = EmittedTotals()
    totals.add_reports(fleet_reports(SPEC))
    wall_us = SPEC.reports_per_node * SPEC.report_us
    gpus = SPEC.nodes * SPEC.gpus_per_node
    assert sum(row["allocated_us"] for row in totals.by_key.values()) == wall_us * gpus
    assert totals.samples == SPEC.samples


def test_tenants_share_nodes_and_some_gpus_are_unallocated():
    nodes = build_nodes(FleetSpec(nodes=100))
    holders_per_node = [
        {h.tenant_id for h in n.holdings if h.tenant_id != UNALLOCATED} for n in nodes
    ]
    assert sum(len(h) == 2 for h in holders_per_node) >= 20
    counts = Counter(h.tenant_id for n in nodes for h in n.holdings)
    assert counts[UNALLOCATED] > 0
    assert len(counts) == 4  # three tenants and unallocated
