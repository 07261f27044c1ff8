"""The agent's main loop (agent/runner.py) on a simulated clock: attribution, report
numbering, a missing allocation file, a restart, a sender that dies."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

from agent.allocation import AllocationFile
from agent.collectors import GpuUnit
from agent.collectors.simulated import SimulatedCollector
from agent.config import config_from_dict
from agent.metrics import AgentMetrics
from agent.runner import Agent
from agent.spool import Spool
from core.identity import ReportLimits
from schemas import ReportCodec
from streams.contract import BatchOutcome, SourceMessage
from streams.processing.outcome import observe_seq
from streams.processing.state import PartitionState
from streams.processing.validate import validate_report

T0 = 1_800_000_000_000_000
TICK = 10_000_000
UNIT = GpuUnit("GPU-0000", 0, "H100")


def run_agent_ticks(
    tmp_path: Path, ticks: int, alloc_writes: dict[int, dict], metrics: AgentMetrics | None = None
) -> list[dict]:
    """The agent loop on a clock that advances a tick per wait; allocation file rewritten
    at given ticks (written "mid-tick", i.e. with since_us inside the tick)."""
    config = config_from_dict(
        {
            "node_id": "n1",
            "cluster": "sc1",
            "broker": "unused:1",
            "spool_dir": "spool",
            "allocation": {"path": "alloc.json"},
            "tick_seconds": 10,
            "publish_seconds": 30,
            "spool_fsync": "never",
            "collector": {"kind": "simulated", "gpus": 2},
        },
        tmp_path,
    )
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
    agent = Agent(
        config,
        collector,
        AllocationFile(config.allocation_path, units),
        spool,
        metrics,
        clock_us=clock,
    )
    agent.run(stop)
    codec = ReportCodec()
    return [codec.decode(e.read()) for e in spool.pending(max_bytes=10**9)]


def seq_outcome(state: PartitionState, node: str, boot: str, seq: int) -> BatchOutcome:
    outcome = BatchOutcome("t", 0)
    observe_seq(state, node, boot, seq, SourceMessage("t", 0, seq, None, b"", T0), outcome)
    return outcome


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

    config = config_from_dict(
        {
            "node_id": "n1",
            "cluster": "sc1",
            "broker": "127.0.0.1:1",
            "spool_dir": "spool",
            "allocation": {"path": "alloc.json"},
            "tick_seconds": 1,
            "publish_seconds": 1,
            "spool_fsync": "never",
            "collector": {"kind": "simulated", "gpus": 2},
        },
        tmp_path,
    )

    def broken_producer(bootstrap: str):
        raise RuntimeError("a defect in the sender")  # not a Kafka or network error

    monkeypatch.setattr(runner, "kafka_producer", broken_producer)
    result: list[int] = []
    started = time.monotonic()
    # In a thread, so that an agent that does not stop fails the test instead of hanging it.
    agent = threading.Thread(
        target=lambda: result.append(runner.run_agent(config, drain_s=1)), daemon=True
    )
    agent.start()
    agent.join(20)
    assert result == [runner.EXIT_SENDER_FAILED], "the agent went on without its sender"
    assert time.monotonic() - started < 10
    assert Spool(config.spool_dir, 10**9).peek_seq() >= 1  # what it spooled is kept
