"""``meter bench hotpath``: the hot path against the plain per-sample path, in process.

Both see the same messages (a simulated fleet, 48 samples per report) in the same run on
one pinned core. The baseline is what PERF.md calls the plain path: fastavro decode per
message plus Python dict aggregation per sample. The readable twin (which also validates,
dedupes and encodes the ledger) is timed too, and the hot path's outcome is checked equal
to the twin's before anything is timed. Medians of repeated runs; compare ratios.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

from agent.fleet import FleetSpec, fleet_reports
from schemas import ReportCodec
from streams.contract import ProcessorSettings, SourceMessage
from streams.processing.aggregate import aggregate_reports
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.hotpath.warmup import warm_up
from streams.processing.processor import PartitionProcessor
from streams.processing.state import PartitionState

BATCH_MESSAGES = 2_000  # per process() call: a worker calls it per partition slice of its batch


def fleet_messages(spec: FleetSpec) -> list[SourceMessage]:
    codec = ReportCodec()
    now_us = spec.start_us + 10**11
    return [
        SourceMessage("bench", 0, i, None, codec.encode(r), now_us)
        for i, r in enumerate(fleet_reports(spec))
    ]


def _baseline(messages: list[SourceMessage], window_us: int) -> int:
    codec = ReportCodec()
    sums = aggregate_reports((codec.decode(m.value) for m in messages), window_us)
    return sum(row[-1] for row in sums.values())


def _processor_run(cls: type, messages: list[SourceMessage], emit_ledger: bool = False) -> int:
    settings = ProcessorSettings(lateness_us=10**12, emit_ledger=emit_ledger)
    processor = cls(PartitionState("bench", 0), settings)
    samples = 0
    for at in range(0, len(messages), BATCH_MESSAGES):
        samples += processor.process(messages[at : at + BATCH_MESSAGES]).accepted_samples
    return samples


def _rate(run: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    samples = run()
    return samples / (time.perf_counter() - started), samples


def _median_rate(run: Callable[[], int], repeats: int) -> tuple[float, int]:
    rates, samples = [], 0
    for _ in range(repeats):
        rate, samples = _rate(run)
        rates.append(rate)
    return statistics.median(rates), samples


def run_hotpath_bench(nodes: int, reports: int, repeats: int, cpu: int | None) -> dict[str, Any]:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    spec = FleetSpec(nodes=nodes, gpus_per_node=8, tenants=3, reports_per_node=reports)
    messages = fleet_messages(spec)
    warm_up()
    # Same input, same outcome: checked before timing.
    check = messages[:BATCH_MESSAGES]
    twin = PartitionProcessor(PartitionState("bench", 0), ProcessorSettings())
    fast = FastPartitionProcessor(PartitionState("bench", 0), ProcessorSettings())
    if fast.process(check) != twin.process(check) or fast.state != twin.state:
        raise AssertionError("hot path and twin disagree on the benchmark input")
    # The slow paths get a slice (the same for both), the hot path everything.
    slow_slice = messages[: min(len(messages), 1_000)]
    window_us = ProcessorSettings().window_us
    twin_rate, _ = _median_rate(lambda: _processor_run(PartitionProcessor, slow_slice), 3)
    # Baseline and hot path alternate, and each ratio is taken within one round: the
    # machine's speed drifts by tens of percent over seconds, a round takes about one.
    baseline, fast, with_ledger = [], [], []
    samples = 0
    for _ in range(repeats):
        baseline.append(_rate(lambda: _baseline(slow_slice, window_us))[0])
        rate, samples = _rate(lambda: _processor_run(FastPartitionProcessor, messages))
        fast.append(rate)
        with_ledger.append(
            _rate(lambda: _processor_run(FastPartitionProcessor, messages, emit_ledger=True))[0]
        )
    baseline_rate = statistics.median(baseline)
    fast_rate = statistics.median(fast)
    with_ledger_rate = statistics.median(with_ledger)
    ratio = statistics.median(f / b for f, b in zip(fast, baseline, strict=True))
    ledger_ratio = statistics.median(w / b for w, b in zip(with_ledger, baseline, strict=True))
    per_message = samples / len(messages)
    return {
        "samples": samples,
        "messages": len(messages),
        "samples_per_message": per_message,
        "samples_per_s": round(fast_rate),
        "messages_per_s": round(fast_rate / per_message),
        "baseline_samples_per_s": round(baseline_rate),
        "twin_samples_per_s": round(twin_rate),
        "with_ledger_samples_per_s": round(with_ledger_rate),
        "with_ledger_ratio": round(ledger_ratio, 2),
        "ratio": round(ratio, 2),
        "ratio_range": [
            round(min(f / b for f, b in zip(fast, baseline, strict=True)), 1),
            round(max(f / b for f, b in zip(fast, baseline, strict=True)), 1),
        ],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu": cpu,
        "repeats": repeats,
    }


def print_hotpath(result: dict[str, Any], as_json: bool) -> None:
    lines = [
        f"hot path      {result['samples_per_s']:>11,} samples/s  "
        f"{result['messages_per_s']:>8,} messages/s  decode, validate, dedupe, aggregate",
        f"+ ledger      {result['with_ledger_samples_per_s']:>11,} samples/s  "
        f"{'':>8}             + Native ledger block, as the worker runs it",
        f"baseline      {result['baseline_samples_per_s']:>11,} samples/s  "
        f"{'':>8}             fastavro decode + dict aggregation per sample",
        f"readable twin {result['twin_samples_per_s']:>11,} samples/s  "
        f"{'':>8}             the hot path's contract in plain Python",
        f"ratio         {result['ratio']:>10}x  (+ ledger {result['with_ledger_ratio']}x) the "
        f"baseline, median of {result['repeats']} paired rounds "
        f"(range {result['ratio_range'][0]}-{result['ratio_range'][1]}x); "
        f"peak RSS {result['peak_rss_mb']} MB; {result['samples']:,} samples in "
        f"{result['messages']:,} messages",
    ]
    print("\n".join(lines))
    if as_json:
        print(json.dumps(result, sort_keys=True))
