"""``meter agent bench``: the agent's CPU cost per tick, measured in process.

Runs the real tick path (collector, allocation file check, attribution, sample building)
and the real publish path (Avro encoding, spool write with fsync) for a simulated node,
with a simulated clock so no time is spent sleeping. Sending is left out (a background
thread that waits on the network). Prints CPU µs per tick and the share of one core at
the configured tick length.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.allocation import AllocationFile
from agent.collectors.simulated import SimulatedCollector
from agent.config import AgentConfig
from agent.metrics import AgentMetrics
from agent.runner import Agent
from agent.spool import Spool
from core.units import US_PER_SECOND


def run_agent_bench(
    gpus: int, ticks: int, tick_s: int, publish_ticks: int, fsync: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        collector = SimulatedCollector("bench-node", gpus=gpus)
        rows = [
            {"gpu": u.uuid, "tenant_id": "aurora-labs", "job_id": f"job-{u.index}"}
            for u in collector.units()
        ]
        (folder / "alloc.json").write_text(json.dumps({"allocations": rows}))
        config = AgentConfig(
            node_id="bench-node",
            cluster="sc1",
            broker="unused:9092",
            allocation_path=folder / "alloc.json",
            spool_dir=folder / "spool",
            tick_us=tick_s * US_PER_SECOND,
            publish_us=tick_s * publish_ticks * US_PER_SECOND,
        )
        spool = Spool(config.spool_dir, 2**40, fsync=fsync)
        metrics = AgentMetrics(config.node_id)
        clock = {"now": 1_800_000_000 * US_PER_SECOND}
        stop = threading.Event()
        tick_us = config.tick_us

        def fake_clock() -> int:
            # Each read jumps to the next boundary: the loop never waits.
            clock["now"] += tick_us
            if metrics.ticks >= ticks:
                stop.set()
            return clock["now"]

        agent = Agent(
            config,
            collector,
            AllocationFile(config.allocation_path, collector.units()),
            spool,
            metrics,
            clock_us=fake_clock,
        )
        wall_started = time.perf_counter()
        agent.run(stop)
        wall_s = time.perf_counter() - wall_started
        per_tick_us = metrics.tick_cpu_s / metrics.ticks * 1e6
        return {
            "gpus": gpus,
            "ticks": metrics.ticks,
            "reports": metrics.reports_spooled,
            "cpu_us_per_tick": round(per_tick_us, 1),
            "tick_s": tick_s,
            "core_percent": round(per_tick_us / (tick_s * 1e6) * 100, 4),
            "wall_s": round(wall_s, 2),
            "fsync": fsync,
        }


def main_agent_bench(gpus: int, ticks: int, tick_s: int, publish_ticks: int, as_json: bool) -> int:
    runs = [run_agent_bench(gpus, ticks, tick_s, publish_ticks, "always") for _ in range(5)]
    median = statistics.median(r["cpu_us_per_tick"] for r in runs)
    result = {
        **runs[0],
        "cpu_us_per_tick": median,
        "core_percent": round(median / (tick_s * 1e6) * 100, 4),
        "runs": 5,
    }
    print(
        f"agent tick path: {median:,.0f} CPU µs per tick for {gpus} GPUs "
        f"(median of 5 runs of {ticks} ticks, a report every {publish_ticks} ticks, spool "
        f"fsync always) = {result['core_percent']}% of one core at one tick per {tick_s} s"
    )
    if as_json:
        print(json.dumps(result, sort_keys=True))
    return 0
