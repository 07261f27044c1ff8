"""Compile the kernels before a worker joins its consumer group.

numba compiles on first call (seconds, or milliseconds from its on-disk cache); doing
that inside the first batch would stall the event loop past the group's session timeout.
"""

from __future__ import annotations

import time

from schemas import ReportCodec
from streams.hotpath.processor import FastPartitionProcessor
from streams.processor import ProcessorSettings, SourceMessage
from streams.state import PartitionState


def warm_up() -> float:
    """Run every kernel once on a tiny batch; returns the seconds it took."""
    started = time.monotonic()
    start_us = 1_700_000_040_000_000
    sample = {
        "gpu_uuid": "GPU-warmup", "gpu_index": 0, "sku": "H100", "tenant_id": "warmup",
        "job_id": "", "tick_start_us": start_us, "tick_end_us": start_us + 30_000_000,
        "allocated_us": 30_000_000, "busy_us": 0, "unhealthy_us": 0, "energy_mj": 0,
        "memory_peak_bytes": 0,
    }  # fmt: skip
    straddling = {**sample, "gpu_uuid": "GPU-warmup-2", "tick_start_us": start_us + 45_000_000,
                  "tick_end_us": start_us + 75_000_000}  # fmt: skip
    report = {
        "node_id": "warmup", "boot_id": "warmup", "seq": 0, "cluster": "warmup",
        "interval_start_us": start_us, "interval_end_us": start_us + 75_000_000,
        "samples": [sample, straddling],
    }  # fmt: skip
    frame = ReportCodec().encode(report)
    messages = [
        SourceMessage("warmup", 0, i, None, value, start_us + 10**9)
        for i, value in enumerate([frame, frame, b"garbage"])
    ]
    FastPartitionProcessor(PartitionState("warmup", 0), ProcessorSettings(lateness_us=0)).process(
        messages
    )
    return time.monotonic() - started
