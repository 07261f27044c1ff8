"""``meter bench soak``: a worker under steady load for minutes, its memory sampled.

A publisher sends the simulated fleet at a fixed message rate while one worker meters it;
the worker's resident memory is read from /proc every few seconds. Memory must be bounded
by open windows and nodes, not by samples metered: after the first minute (imports,
compiled kernels, buffers growing to the batch size) it should stay flat. At the end the
totals in ClickHouse are checked against what was emitted, like ``bench e2e``.

The local broker keeps every message in memory (docs/BROKER.md, bug 3), so the rate and
duration are bounded by this machine's memory: 1,500 messages/s for 10 minutes is about
5.4 GB of reports.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.e2e import bench_pipeline, build_backlog, consumed_messages, rss_mb, say
from bench.loadgen import publish
from meter.runner import WorkerProcess, totals_exact
from stack import LocalStack

SAMPLE_EVERY_S = 5.0


def _slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per minute."""
    if len({t for t, _ in points}) < 2:
        return 0.0
    fit = statistics.linear_regression([t for t, _ in points], [m for _, m in points])
    return 60 * fit.slope


def run_soak(
    nodes: int, seconds: float, messages_per_s: float, partitions: int, folder: Path | None
) -> dict[str, Any]:
    folder = folder or Path(tempfile.mkdtemp(prefix="meter-soak-"))
    stack = LocalStack(folder)
    info = stack.up()
    run_id = uuid.uuid4().hex[:8]
    try:
        reports = max(1, round(seconds * messages_per_s / nodes))
        records, emitted = build_backlog(nodes, reports, messages_per_s)
        warehouse, settings = bench_pipeline(info, f"soak_{run_id}", partitions, folder)
        topic = settings.topic
        say(
            f"soak: {emitted.reports:,} messages ({emitted.samples:,} samples) at "
            f"{messages_per_s:,.0f} messages/s for {seconds:.0f} s"
        )
        worker = WorkerProcess.start(settings, folder / "worker.log")
        failure: list[BaseException] = []

        def publish_all() -> None:
            try:
                publish(info.bootstrap, topic, partitions, records)
            except BaseException as error:  # reported by the main thread
                failure.append(error)

        publisher = threading.Thread(target=publish_all, name="soak-publisher")
        started = time.monotonic()
        publisher.start()
        rss: list[tuple[float, float]] = []
        done = 0
        try:
            while publisher.is_alive() or done < emitted.reports:
                if not worker.alive():
                    raise RuntimeError(f"worker exited; see {worker.log_path}")
                if failure:
                    raise RuntimeError(f"publisher failed: {failure[0]!r}")
                rss.append((time.monotonic() - started, rss_mb(worker.proc.pid)))
                done = consumed_messages(info.bootstrap, settings.app_id, topic, partitions)
                if len(rss) % 12 == 0:
                    say(f"{rss[-1][0]:5.0f} s: {done:,} messages metered, RSS {rss[-1][1]:.0f} MB")
                time.sleep(SAMPLE_EVERY_S)
        finally:
            worker.stop()
            publisher.join(timeout=60)
        elapsed = time.monotonic() - started
        exact = totals_exact(emitted, warehouse)
        # The first minute (imports, kernels, buffers growing) is left out; of a run
        # shorter than two minutes, its first half.
        warm_s = min(60.0, rss[-1][0] / 2)
        settled = [(t, m) for t, m in rss if t >= warm_s] or rss
        settled_mb = [m for _, m in settled]
        first_min = [m for t, m in settled if t < warm_s + 60]
        last_min = [m for t, m in settled if t >= settled[-1][0] - 60]
        return {
            "seconds": round(elapsed, 1),
            "messages": emitted.reports,
            "samples": emitted.samples,
            "messages_per_s": round(emitted.reports / elapsed),
            "samples_per_s": round(emitted.samples / elapsed),
            "peak_rss_mb": round(max(m for _, m in rss), 1),
            "rss_after_1_min_mb": round(statistics.median(first_min), 1),
            "rss_last_min_mb": round(statistics.median(last_min), 1),
            "rss_settled_range_mb": [round(min(settled_mb), 1), round(max(settled_mb), 1)],
            "rss_slope_mb_per_min": round(_slope_mb_per_min(settled), 2),
            "rss_samples": [[round(t), round(m, 1)] for t, m in rss],
            "exact": exact,
        }
    finally:
        stack.down()


def print_soak(result: dict[str, Any], as_json: bool) -> None:
    r = result
    print(
        f"soak          {r['samples_per_s']:>10,} samples/s  {r['messages_per_s']:>7,} messages/s"
        f"  over {r['seconds']} s, {r['samples']:,} samples, exact={r['exact']}"
    )
    low, high = r["rss_settled_range_mb"]
    print(
        f"worker RSS    after 1 min {r['rss_after_1_min_mb']} MB, last minute "
        f"{r['rss_last_min_mb']} MB, range after 1 min {low}-{high} MB, "
        f"slope {r['rss_slope_mb_per_min']} MB/min, peak {r['peak_rss_mb']} MB"
    )
    if as_json:
        print(json.dumps(r, sort_keys=True))


def main_soak(args: Any) -> int:
    result = run_soak(
        args.nodes,
        args.seconds,
        args.rate,
        args.partitions,
        Path(args.stack_dir) if args.stack_dir else None,
    )
    print_soak(result, args.json)
    return 0 if result["exact"] else 1
