"""The benchmark's load generator: its frames are the reports it claims to send."""

from __future__ import annotations

from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from agent.fleet import FleetSpec, build_nodes, node_report
from bench.loadgen import ShiftedReports, partition_of
from schemas import ReportCodec
from tests.factories import make_report, make_sample

CODEC = ReportCodec()


def _shifted(report: dict, seq: int, shift_us: int) -> dict:
    moved = {k: v + shift_us if k.endswith("_us") else v for k, v in report.items()}
    moved["seq"] = seq
    moved["samples"] = [
        {k: v + shift_us if k.startswith("tick_") else v for k, v in s.items()}
        for s in report["samples"]
    ]
    return moved


def test_shifted_frames_decode_to_the_shifted_reports():
    spec = FleetSpec(nodes=5, gpus_per_node=8, tenants=3, reports_per_node=1)
    templates = [node_report(spec, node, 0) for node in build_nodes(spec)]
    templates.append(make_report([], seq=3))  # a report without samples
    edge = make_sample(gpu_index=2**31 - 1, energy_mj=0, memory_peak_bytes=2**40)
    templates.append(make_report([edge], seq=0))
    reports = ShiftedReports([CODEC.encode(t) for t in templates])
    # Seqs across varint lengths (1, 2 and 3 bytes), shifts that lengthen the longs.
    for seq, shift_us in [(0, 0), (63, 60_000_000), (64, 10**12), (9_000, 3 * 10**15)]:
        frames = reports.frames(seq, shift_us)
        assert len(frames) == len(templates)
        for (frame, end_ms), template in zip(frames, templates, strict=True):
            expected = _shifted(template, seq, shift_us)
            assert CODEC.decode(frame) == expected
            assert frame == CODEC.encode(expected)  # the same bytes as the codec's
            assert end_ms == expected["interval_end_us"] // 1000


def test_partitions_are_the_ones_kafka_python_picks():
    """The agents publish with kafka-python: a node's reports must land where its
    default partitioner puts them (murmur2 of the key, sign bit cleared, modulo)."""
    keys = [f"sc1-node-{i:05d}".encode() for i in range(200)]
    for partitions in (1, 4, 8):
        picked = [partition_of(k, partitions) for k in keys]
        assert picked == [(kafka_python_murmur2(k) & 0x7FFFFFFF) % partitions for k in keys]
        assert len(set(picked)) == partitions
