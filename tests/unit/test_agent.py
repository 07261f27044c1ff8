"""The node agent's pure parts: attribution, tick splitting, the spool, config, and the
main loop on a simulated clock."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.allocation import AllocationFile, Assignment, Attribution, Holder, parse_allocations
from agent.collectors import GpuUnit, TickReading
from agent.collectors.simulated import SimulatedCollector
from agent.config import config_from_dict, load_config
from agent.errors import AllocationError
from agent.metrics import AgentMetrics
from agent.report import tick_samples
from agent.runner import Agent
from agent.spool import Spool
from core.errors import ConfigError
from core.identity import ReportLimits
from schemas import ReportCodec
from streams.contract import BatchOutcome, SourceMessage
from streams.outcome import observe_seq
from streams.state import PartitionState
from streams.validate import validate_report

T0 = 1_800_000_000_000_000
TICK = 10_000_000
UNIT = GpuUnit("GPU-0000", 0, "H100")


def test_tenant_switch_mid_tick_splits_exactly() -> None:
    attribution = Attribution([UNIT], T0)
    attribution.observe({UNIT.uuid: Assignment(Holder("aurora-labs", "a-1"), T0)}, T0, T0)
    switch = T0 + 3_700_001
    attribution.observe(
        {UNIT.uuid: Assignment(Holder("borealis-ai", "b-7"), switch)}, T0 + TICK, T0
    )
    pieces = attribution.pieces(UNIT.uuid, T0, T0 + TICK)
    reading = TickReading(UNIT, busy_us=9_999_999, unhealthy=True, energy_mj=7_000_003,
                          memory_peak_bytes=5)  # fmt: skip
    samples = tick_samples(reading, pieces, T0, T0 + TICK)
    assert [(s["tenant_id"], s["job_id"], s["tick_start_us"], s["tick_end_us"],
             s["allocated_us"]) for s in samples] == [
        ("aurora-labs", "a-1", T0, switch, 3_700_001),
        ("borealis-ai", "b-7", switch, T0 + TICK, TICK - 3_700_001),
    ]  # fmt: skip
    assert sum(s["allocated_us"] for s in samples) == TICK
    assert sum(s["busy_us"] for s in samples) == 9_999_999
    assert sum(s["energy_mj"] for s in samples) == 7_000_003
    assert [s["unhealthy_us"] for s in samples] == [3_700_001, TICK - 3_700_001]
    # The aurora piece: floor(9,999,999 × 3,700,001 / 10^7) by the cumulative-floor rule.
    assert samples[0]["busy_us"] == 9_999_999 * 3_700_001 // TICK
    report = {"node_id": "n1", "boot_id": "b1", "seq": 0, "cluster": "sc1",
              "interval_start_us": T0, "interval_end_us": T0 + TICK,
              "samples": samples}  # fmt: skip
    validate_report(report, ReportLimits(), T0 + TICK)  # the pipeline accepts the split


@settings(max_examples=200, deadline=None)
@given(
    changes=st.lists(st.tuples(st.integers(0, TICK), st.sampled_from(["a", "b", "unallocated"])),
                     max_size=6),
    busy=st.integers(0, TICK), energy=st.integers(0, 10**10), unhealthy=st.booleans(),
)  # fmt: skip
def test_any_holder_changes_keep_every_microsecond_and_counter(
    changes: list[tuple[int, str]], busy: int, energy: int, unhealthy: bool
) -> None:
    attribution = Attribution([UNIT], T0)
    for at, tenant in sorted(changes):
        attribution.observe({UNIT.uuid: Assignment(Holder(tenant), T0 + at)}, T0 + at, T0)
    pieces = attribution.pieces(UNIT.uuid, T0, T0 + TICK)
    samples = tick_samples(TickReading(UNIT, busy, unhealthy, energy, 0), pieces, T0, T0 + TICK)
    assert sum(s["allocated_us"] for s in samples) == TICK
    assert sum(s["busy_us"] for s in samples) == busy
    assert sum(s["energy_mj"] for s in samples) == energy
    assert sum(s["unhealthy_us"] for s in samples) == (TICK if unhealthy else 0)
    assert all(s["busy_us"] <= s["allocated_us"] for s in samples)
    starts = [s["tick_start_us"] for s in samples]
    assert starts == sorted(set(starts))  # no two samples of a GPU share a tick start


def test_allocation_file_formats_and_refusals(tmp_path: Path) -> None:
    units = [GpuUnit("GPU-a", 0, "H100"), GpuUnit("GPU-b", 1, "H100")]
    doc = {"allocations": [{"gpu": "GPU-a", "tenant_id": "aurora-labs", "job_id": "j1",
                            "since_us": T0}, {"gpu": "1", "tenant_id": "borealis-ai"}]}  # fmt: skip
    parsed = parse_allocations(json.dumps(doc), ".json", units)
    assert parsed["GPU-a"] == Assignment(Holder("aurora-labs", "j1"), T0)
    assert parsed["GPU-b"] == Assignment(Holder("borealis-ai", ""), None)
    csv_text = f"gpu,tenant_id,job_id,since_us\nGPU-b,cinder-research,c9,{T0}\n"
    assert parse_allocations(csv_text, ".csv", units)["GPU-b"].holder.tenant_id == "cinder-research"
    bad = [
        ('{"allocations": [{"gpu": "GPU-zz", "tenant_id": "x"}]}', "not a unit"),
        ('{"allocations": [{"gpu": "0", "tenant_id": "Bad Tenant"}]}', "not a valid tenant"),
        ('{"allocations": [{"gpu": "0", "tenant_id": "a"}, {"gpu": "GPU-a", "tenant_id": "b"}]}',
         "listed twice"),
        ('{"allocations": [{"gpu": "0", "tenant_id": "a", "since_us": "soon"}]}', "integer"),
        ("{not json", "not JSON"),
    ]  # fmt: skip
    for text, message in bad:
        with pytest.raises(AllocationError, match=message):
            parse_allocations(text, ".json", units)
    path = tmp_path / "alloc.json"
    source = AllocationFile(path, units)
    with pytest.raises(AllocationError, match=r"alloc\.json does not exist"):
        source.current()  # an error, every time it is asked, until the file appears
    path.write_text(json.dumps(doc))
    assert source.current()["GPU-a"].holder.tenant_id == "aurora-labs"


def test_spool_keeps_order_recovers_and_reports_the_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=250, alarm_fraction=0.5, fsync="always")
    for seq in range(3):
        assert spool.put(seq, bytes([seq]) * 100) is (seq < 2)
    assert spool.alarm and spool.dropped == [[2, 2]] and spool.bytes_used == 200
    assert [e.seq for e in spool.pending()] == [0, 1]
    (tmp_path / "00000000000000000009.report.tmp").write_bytes(b"torn")
    spool.remove(0)
    again = Spool(tmp_path, max_bytes=250)  # a restart
    assert again.peek_seq() == 3 and [e.seq for e in again.pending()] == [1]
    assert not list(tmp_path.glob("*.tmp")) and again.dropped == [[2, 2]]
    assert again.pending()[0].read() == b"\x01" * 100
    # A crash after the report file but before state.json: the seq is still not reused.
    (tmp_path / "00000000000000000003.report").write_bytes(b"x")
    assert Spool(tmp_path, max_bytes=250).peek_seq() == 4


def test_config_is_validated_at_the_edge(tmp_path: Path) -> None:
    base = {"node_id": "n1", "cluster": "sc1", "broker": "k:9092", "spool_dir": "spool",
            "allocation": {"path": "a.json"}}  # fmt: skip
    config = config_from_dict({**base, "tick_seconds": 0.25, "publish_seconds": 1}, tmp_path)
    assert (config.tick_us, config.publish_us) == (250_000, 1_000_000)
    assert config.spool_dir == tmp_path / "spool"
    for patch, message in [
        ({"tick_seconds": 7}, "divide 60"),
        ({"tick_seconds": 10, "publish_seconds": 25}, "whole number of ticks"),
        ({"node_id": "bad node"}, "valid name"),
        ({"collector": {"kind": "gpu-magic"}}, "kind"),
        ({"colector": {}}, "unknown agent config keys"),
        ({"tick_seconds": 0.0000001}, "microseconds"),
        ({"topic": "gpu usage"}, "'gpu usage' is not a Kafka topic name"),
        ({"metrics_host": "every interface"}, "must be an IP address to listen on"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**base, **patch}, tmp_path)


def test_the_example_config_loads() -> None:
    config = load_config(Path(__file__).parents[2] / "agent" / "agent.example.toml")
    assert (config.collector, config.tick_us, config.spool_fsync) == ("nvml", TICK, "always")
    assert config.metrics_host == "0.0.0.0"  # scrapeable from the Prometheus host


def run_agent_ticks(
    tmp_path: Path, ticks: int, alloc_writes: dict[int, dict], metrics: AgentMetrics | None = None
) -> list[dict]:
    """The agent loop on a clock that advances a tick per wait; allocation file rewritten
    at given ticks (written "mid-tick", i.e. with since_us inside the tick)."""
    config = config_from_dict({
        "node_id": "n1", "cluster": "sc1", "broker": "unused:1", "spool_dir": "spool",
        "allocation": {"path": "alloc.json"}, "tick_seconds": 10, "publish_seconds": 30,
        "spool_fsync": "never", "collector": {"kind": "simulated", "gpus": 2},
    }, tmp_path)  # fmt: skip
    collector = SimulatedCollector("n1", gpus=2)
    spool = Spool(config.spool_dir, 10**9, fsync="never")
    metrics = metrics or AgentMetrics("n1")
    stop = threading.Event()
    now = {"t": T0}
    done = {"ticks": -1}

    def clock() -> int:
        if metrics.ticks != done["ticks"]:
            done["ticks"] = metrics.ticks
            doc = alloc_writes.get(metrics.ticks)
            if doc is not None:
                (tmp_path / "alloc.json").write_text(json.dumps(doc))
        if metrics.ticks >= ticks:
            stop.set()
        now["t"] += TICK // 2
        return now["t"]

    units = collector.units()
    agent = Agent(config, collector, AllocationFile(config.allocation_path, units), spool,
                  metrics, clock_us=clock)  # fmt: skip
    agent.run(stop)
    codec = ReportCodec()
    return [codec.decode(e.read()) for e in spool.pending(max_bytes=10**9)]


def test_agent_loop_attributes_splits_and_numbers_reports(tmp_path: Path) -> None:
    units = SimulatedCollector("n1", gpus=2).units()
    switch = T0 + 25 * TICK // 10 + 1_234_567  # inside the third tick
    writes = {
        0: {"allocations": [{"gpu": units[0].uuid, "tenant_id": "aurora-labs", "since_us": T0}]},
        2: {
            "allocations": [{"gpu": units[0].uuid, "tenant_id": "borealis-ai", "since_us": switch}]
        },
    }
    reports = run_agent_ticks(tmp_path, 6, writes)
    assert [r["seq"] for r in reports] == list(range(len(reports)))
    for before, after in itertools.pairwise(reports):
        assert after["interval_start_us"] == before["interval_end_us"]  # intervals tile
    samples = [s for r in reports for s in r["samples"]]
    for unit in units:
        mine = [s for s in samples if s["gpu_uuid"] == unit.uuid]
        wall = reports[-1]["interval_end_us"] - reports[0]["interval_start_us"]
        assert sum(s["allocated_us"] for s in mine) == wall
    gpu0 = [s for s in samples if s["gpu_uuid"] == units[0].uuid]
    aurora = sum(s["allocated_us"] for s in gpu0 if s["tenant_id"] == "aurora-labs")
    assert aurora == switch - reports[0]["interval_start_us"]
    assert {s["tenant_id"] for s in samples if s["gpu_uuid"] == units[1].uuid} == {"unallocated"}
    for r in reports:
        validate_report(r, ReportLimits(), r["interval_end_us"])


def test_a_missing_allocation_file_is_logged_and_counted_every_tick(tmp_path: Path, caplog):
    """Never written: an error on each tick (not silence), and every GPU is metered to
    unallocated meanwhile, as documented; once it appears, it is used."""
    import logging

    metrics = AgentMetrics("n1")
    units = SimulatedCollector("n1", gpus=2).units()
    late = {"allocations": [{"gpu": units[0].uuid, "tenant_id": "aurora-labs"}]}
    with caplog.at_level(logging.ERROR, logger="agent.runner"):
        reports = run_agent_ticks(tmp_path, 6, {4: late}, metrics=metrics)
    missing = [r for r in caplog.records if "does not exist" in str(r.__dict__.get("fields"))]
    assert len(missing) == metrics.allocation_errors == 4  # ticks 0-3, before the file
    tenants = [s["tenant_id"] for r in reports for s in r["samples"]]
    assert "aurora-labs" in tenants and tenants[0] == "unallocated"


def seq_outcome(state: PartitionState, node: str, boot: str, seq: int) -> BatchOutcome:
    outcome = BatchOutcome("t", 0)
    observe_seq(state, node, boot, seq, SourceMessage("t", 0, seq, None, b"", T0), outcome)
    return outcome


def test_a_restarted_agent_continuing_its_seq_opens_no_gap() -> None:
    state = PartitionState("t", 0)
    for seq in range(5):
        seq_outcome(state, "n1", "boot-a", seq)
    assert seq_outcome(state, "n1", "boot-b", 5).gap_rows == []
    [gap] = seq_outcome(state, "n1", "boot-c", 8).gap_rows  # reports 6, 7 never arrived
    assert (gap.boot_id, gap.first_missing, gap.last_missing) == ("boot-c", 6, 7)
    [gap] = seq_outcome(state, "n2", "boot-x", 3).gap_rows  # a node's first report
    assert (gap.first_missing, gap.last_missing) == (0, 2)
    assert seq_outcome(state, "n1", "boot-d", 0).gap_rows == []  # its seq store was lost
    restored = PartitionState.from_snapshot(state.to_snapshot())
    assert restored == state


def test_a_sender_that_dies_ends_the_agent_non_zero_and_keeps_its_spool(tmp_path, monkeypatch):
    import time

    from agent import runner

    config = config_from_dict({
        "node_id": "n1", "cluster": "sc1", "broker": "127.0.0.1:1", "spool_dir": "spool",
        "allocation": {"path": "alloc.json"}, "tick_seconds": 1, "publish_seconds": 1,
        "spool_fsync": "never", "collector": {"kind": "simulated", "gpus": 2},
    }, tmp_path)  # fmt: skip

    def broken_producer(bootstrap: str):
        raise RuntimeError("a defect in the sender")  # not a Kafka or network error

    monkeypatch.setattr(runner, "kafka_producer", broken_producer)
    result: list[int] = []
    started = time.monotonic()
    # In a thread, so that an agent that does not stop fails the test instead of hanging it.
    agent = threading.Thread(target=lambda: result.append(runner.run_agent(config, drain_s=1)),
                             daemon=True)  # fmt: skip
    agent.start()
    agent.join(20)
    assert result == [runner.EXIT_SENDER_FAILED], "the agent went on without its sender"
    assert time.monotonic() - started < 10
    assert Spool(config.spool_dir, 10**9).peek_seq() >= 1  # what it spooled is kept
