"""``meter bench e2e``: simulated fleet → Tansu → Faust worker → ClickHouse, measured.

A backlog of node reports (8 GPUs × 6 ticks = 48 samples each) is published first. Then,
one after another and each in its own consumer group on the same topic:

1. a no-op Faust agent (what Faust itself moves per second: the floor),
2. the plain per-message agent (fastavro decode + dict aggregation per message),
3. the metering worker with the hot path, over the whole backlog, writing the ledger,
   rollups and state to ClickHouse; its totals are then checked against what was emitted.

Rates come from the groups' committed offsets over time; the worker's memory is sampled
from /proc. Run it on a quiet machine and read ratios, not absolute figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.fleet import FleetSpec, build_nodes, node_report
from agent.totals import EmittedTotals
from bench.loadgen import Record, ShiftedReports, publish
from meter.runner import WorkerProcess, totals_exact
from schemas import ReportCodec
from stack import LocalStack, StackInfo
from streams.host.progress import committed_offsets
from streams.host.settings import WorkerSettings
from streams.host.topics import ensure_topics
from warehouse.client import Warehouse
from warehouse.migrate import migrate


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_backlog(
    nodes: int,
    reports: int,
    messages_per_s: float | None = None,
    start_us: int | None = None,
) -> tuple[Iterator[Record | float], EmittedTotals]:
    """Records (generated lazily) of ``nodes`` × ``reports`` reports, and their exact totals.

    Report ``seq`` of a node repeats the node's first report shifted by ``seq`` publish
    intervals (one window), so the totals are the first report's, shifted per seq. With
    ``messages_per_s``, each round of reports is followed by the moment the next may start
    (see :func:`bench.loadgen.publish`).
    """
    spec = FleetSpec(nodes=nodes, gpus_per_node=8, tenants=3, reports_per_node=reports)
    if start_us is not None:  # reports of the present (bench/freshness.py)
        spec = replace(spec, start_us=start_us)
    codec = ReportCodec()
    shift_us = spec.report_us
    totals = EmittedTotals()
    templates = [(node, node_report(spec, node, 0)) for node in build_nodes(spec)]
    keys = [node.node_id.encode() for node, _ in templates]
    shifted = ShiftedReports([codec.encode(report) for _, report in templates])
    per_node: list[EmittedTotals] = []
    for _, template in templates:
        t = EmittedTotals()
        t.add_report(template)
        per_node.append(t)

    def records() -> Iterator[Record | float]:
        started = time.monotonic()
        for seq in range(reports):
            for key, (value, end_ms) in zip(keys, shifted.frames(seq, seq * shift_us), strict=True):
                yield key, value, end_ms
            if messages_per_s:
                yield started + (seq + 1) * len(keys) / messages_per_s

    for t in per_node:
        for (tenant, sku, cluster, w), row in t.by_key.items():
            for seq in range(reports):
                acc = totals._row((tenant, sku, cluster, w + seq * shift_us))
                for name, value in row.items():
                    acc[name] += value
        totals.reports += t.reports * reports
        totals.samples += t.samples * reports
    return records(), totals


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def consumed_messages(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    return sum(committed_offsets(bootstrap, group, topic, partitions).values())


def measure_rate(
    argv: list[str],
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    seconds: float,
    log: Path,
) -> float:
    """Messages/s a consumer process commits over ``seconds``, after it got going."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while consumed_messages(bootstrap, group, topic, partitions) == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{argv[3]} agent never committed; see {log}")
            time.sleep(0.5)
        start_n, start_t = consumed_messages(bootstrap, group, topic, partitions), time.monotonic()
        time.sleep(seconds)
        end_n, end_t = consumed_messages(bootstrap, group, topic, partitions), time.monotonic()
        return (end_n - start_n) / (end_t - start_t)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def bench_pipeline(
    info: StackInfo, name: str, partitions: int, folder: Path, **worker: Any
) -> tuple[Warehouse, WorkerSettings]:
    """A fresh database (migrated), topic and worker settings, all named after ``name``."""
    ch = info.settings(name)
    warehouse = Warehouse(ch)
    migrate(warehouse)
    settings = WorkerSettings(
        bootstrap=info.bootstrap,
        topic=name.replace("_", "-"),
        app_id=f"{name}-worker",
        partitions=partitions,
        clickhouse=ch,
        datadir=folder / "faust",
        **worker,
    )
    ensure_topics(info.bootstrap, {settings.topic: partitions, settings.dlq_topic: 1})
    return warehouse, settings


def run_e2e_bench(
    nodes: int,
    reports: int,
    partitions: int,
    floor_seconds: float,
    folder: Path | None,
    batch_messages: int = 5_000,
) -> dict[str, Any]:
    folder = folder or Path(tempfile.mkdtemp(prefix="meter-bench-"))
    stack = LocalStack(folder)
    info = stack.up()
    run_id = uuid.uuid4().hex[:8]
    try:
        say(f"stack up in {folder}; building {nodes * reports:,} reports")
        frames, emitted = build_backlog(nodes, reports)
        warehouse, settings = bench_pipeline(
            info, f"bench_{run_id}", partitions, folder, batch_max_messages=batch_messages
        )
        topic = settings.topic
        say(f"publishing {emitted.reports:,} messages ({emitted.samples:,} samples)")
        started = time.monotonic()
        sent = publish(info.bootstrap, topic, partitions, frames)
        published_s = time.monotonic() - started
        say(f"published in {published_s:.0f} s ({sum(sent.values()) / published_s:,.0f} msg/s)")
        total_messages = sum(sent.values())  # a fresh topic: also its end offset
        rates = {}
        for kind in ("noop", "plain"):  # one after another: they must not share the CPU
            group = f"bench-{kind}-{run_id}"
            argv = [sys.executable, "-m", "bench.agents", kind, info.bootstrap, topic, group]
            rates[kind] = measure_rate(
                argv,
                info.bootstrap,
                group,
                topic,
                partitions,
                floor_seconds,
                folder / f"{kind}.log",
            )
            say(f"{kind} Faust agent: {rates[kind]:,.0f} messages/s")
        noop_rate, plain_rate = rates["noop"], rates["plain"]

        worker = WorkerProcess.start(settings, folder / "worker.log")
        pids = {
            "worker": worker.proc.pid,
            "broker": info.broker_pid,
            "clickhouse": info.clickhouse_pid,
        }
        rss: list[float] = []
        points: list[tuple[float, int]] = []
        cpu_at: dict[str, float] = {}
        try:
            while True:
                done = consumed_messages(info.bootstrap, settings.app_id, topic, partitions)
                if done and not cpu_at:
                    cpu_at = {name: cpu_seconds(pid) for name, pid in pids.items()}
                points.append((time.monotonic(), done))
                rss.append(rss_mb(worker.proc.pid))
                cpu_now = {name: cpu_seconds(pid) for name, pid in pids.items()}
                if done >= total_messages:
                    break
                if not worker.alive():
                    raise RuntimeError(f"worker exited; see {worker.log_path}")
                time.sleep(2)
        finally:
            worker.stop()
        moving = [(t, n) for t, n in points if n > 0]
        first_t, first_n = moving[0]
        last_t, last_n = moving[-1]
        seconds = last_t - first_t
        worker_rate = (last_n - first_n) / seconds if seconds > 0 else 0.0
        per_message = emitted.samples / total_messages
        exact = totals_exact(emitted, warehouse)
        steady = rss[len(rss) // 4 :] or rss
        # Cores each process kept busy while the worker was moving (2 here, shared).
        cores = {
            name: round((cpu_now[name] - cpu_at.get(name, 0.0)) / seconds, 2) if seconds else None
            for name in pids
        }
        return {
            "messages": total_messages,
            "samples": emitted.samples,
            "samples_per_message": per_message,
            "seconds": round(seconds, 1),
            "messages_per_s": round(worker_rate),
            "samples_per_s": round(worker_rate * per_message),
            "noop_messages_per_s": round(noop_rate),
            "baseline_messages_per_s": round(plain_rate),
            "baseline_samples_per_s": round(plain_rate * per_message),
            # Two decimals: with one, 9.97 read as "10.0", the very line the target sits on.
            "ratio": round(worker_rate / plain_rate, 2) if plain_rate else None,
            "vs_noop": round(worker_rate / noop_rate, 2) if noop_rate else None,
            "peak_rss_mb": round(max(rss), 1),
            "rss_first_quarter_mb": round(rss[len(rss) // 4], 1) if rss else None,
            "rss_last_mb": round(rss[-1], 1) if rss else None,
            "rss_steady_spread_mb": round(max(steady) - min(steady), 1) if steady else None,
            "exact": exact,
            "cpu_cores": cores,
            "batch_messages": batch_messages,
        }
    finally:
        stack.down()


def print_e2e(result: dict[str, Any], as_json: bool) -> None:
    r = result
    print(
        f"worker        {r['samples_per_s']:>10,} samples/s  {r['messages_per_s']:>7,} messages/s"
        f"  over {r['seconds']} s, {r['samples']:,} samples, exact={r['exact']}"
    )
    print(
        f"plain agent   {r['baseline_samples_per_s']:>10,} samples/s  "
        f"{r['baseline_messages_per_s']:>7,} messages/s  (fastavro + dict per message)"
    )
    print(
        f"no-op agent   {'':>10}            {r['noop_messages_per_s']:>7,} messages/s"
        "  (Faust's floor)"
    )
    if r["ratio"] is None or r["vs_noop"] is None:
        print("ratio n/a: an agent drained the backlog before it was measured; use more --reports")
    else:
        print(
            f"ratio {r['ratio']}x the plain agent; {r['vs_noop']:.0%} of the no-op agent's "
            "message rate"
        )
    print(
        f"worker RSS peak {r['peak_rss_mb']} MB, last {r['rss_last_mb']} MB; cores busy: "
        + ", ".join(f"{name} {cores}" for name, cores in r["cpu_cores"].items())
    )
    if as_json:
        print(json.dumps(r, sort_keys=True))


def main_e2e(args: Any) -> int:
    result = run_e2e_bench(
        args.nodes,
        args.reports,
        args.partitions,
        args.floor_seconds,
        Path(args.stack_dir) if args.stack_dir else None,
        args.batch_messages,
    )
    print_e2e(result, args.json)
    return 0 if result["exact"] else 1
