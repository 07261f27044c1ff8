"""Compile the kernels before a worker joins its consumer group.

numba compiles on first call (seconds, or milliseconds from its on-disk cache); doing
that inside the first batch would stall the event loop past the group's session timeout.
"""

from __future__ import annotations

import time

import numpy as np
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from schemas import ReportCodec
from streams.contract import ProcessorSettings, SourceMessage
from streams.intake.block import MessageBlock
from streams.intake.fetch import RawFetch
from streams.intake.records import scan_batches
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.state import PartitionState


def warm_up() -> float:
    """Run every kernel once on a tiny batch; returns the seconds it took."""
    started = time.monotonic()
    start_us = 1_700_000_040_000_000
    sample = {
        "gpu_uuid": "GPU-warmup",
        "gpu_index": 0,
        "sku": "H100",
        "tenant_id": "warmup",
        "job_id": "",
        "tick_start_us": start_us,
        "tick_end_us": start_us + 30_000_000,
        "allocated_us": 30_000_000,
        "busy_us": 0,
        "unhealthy_us": 0,
        "energy_mj": 0,
        "memory_peak_bytes": 0,
    }
    straddling = {
        **sample,
        "gpu_uuid": "GPU-warmup-2",
        "tick_start_us": start_us + 45_000_000,
        "tick_end_us": start_us + 75_000_000,
    }
    report = {
        "node_id": "warmup",
        "boot_id": "warmup",
        "seq": 0,
        "cluster": "warmup",
        "interval_start_us": start_us,
        "interval_end_us": start_us + 75_000_000,
        "samples": [sample, straddling],
    }
    frame = ReportCodec().encode(report)
    messages = [
        SourceMessage("warmup", 0, i, None, value, start_us + 10**9)
        for i, value in enumerate([frame, frame, b"garbage"])
    ]
    FastPartitionProcessor(PartitionState("warmup", 0), ProcessorSettings(lateness_us=0)).process(
        messages
    )
    _read_a_fetch(frame)
    return time.monotonic() - started


def _read_a_fetch(value: bytes) -> None:
    """The fetch layer's kernels (batch scan, CRC-32C, record parse) on one record batch
    as the broker sends it."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    builder.append(0, timestamp=1_700_000_000_000, key=b"warmup", value=value, headers=[])
    data = bytes(builder.build())
    _, end, next_offset, count = scan_batches(np.frombuffer(data, np.uint8))
    MessageBlock.fetched("warmup", 0, [RawFetch(data, end, 0, next_offset, count)])
