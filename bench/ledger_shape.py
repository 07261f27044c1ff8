"""What the ledger's shape costs ClickHouse, under back-to-back inserts: one row per
sample (migration 0004), one packed row per report with its holdings and ticks stored
once and each sample naming them by position (0008, 0012), and one row per report and GPU
holding with its samples in arrays (0013, what the worker writes now).

Run against the local stack (``.venv/bin/meter stack up`` first):

    .venv/bin/python -m bench.ledger_shape

It meters a simulated fleet with the hot path into 5,000-message Native ledger blocks,
rewrites the same rows one per sample inside ClickHouse and packed here (the packed
encoder the worker used before 0013), then inserts each shape into its own
ReplacingMergeTree table and reports samples/s, bytes sent per sample and ClickHouse CPU
seconds per million samples (the inserts, then every merge they set off, until none
runs). The numbers are in docs/PERFORMANCE.md; this is an experiment, not part of the
pipeline.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

from agent.fleet import FleetSpec
from bench.e2e import cpu_seconds
from bench.hotpath import fleet_messages
from schemas import ReportCodec
from streams.contract import ProcessorSettings, SourceMessage
from streams.output.native import LEDGER_COLUMNS, LEDGER_TABLE, encode_block
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.state import PartitionState
from warehouse.migrate import Migration

ROOT = Path(__file__).parents[1]
_REPORT = (
    "node_id",
    "boot_id",
    "seq",
    "cluster",
    "interval_start_us",
    "interval_end_us",
    "source_partition",
    "source_offset",
)
_HOLDING = ("gpu_uuid", "gpu_index", "sku", "tenant_id", "job_id")
_TICK = ("tick_start_us", "tick_end_us")
_COUNTERS = ("allocated_us", "busy_us", "unhealthy_us", "energy_mj", "memory_peak_bytes")
# The per-sample table has no report interval.
_PER_SAMPLE_REPORT = tuple(c for c in _REPORT if not c.startswith("interval_"))
SAMPLE_COLUMNS = ", ".join((*_PER_SAMPLE_REPORT, *_HOLDING, *_TICK, *_COUNTERS, "late"))
TO_SAMPLE = (
    f"SELECT {SAMPLE_COLUMNS} FROM staging ARRAY JOIN "
    + ", ".join((*_TICK, *_COUNTERS, "late"))
    + " FORMAT Native"
)
PACKED_NAMES = (
    *_REPORT,
    "gpu_uuids",
    "gpu_indexes",
    "skus",
    "tenant_ids",
    "job_ids",
    "tick_starts_us",
    "tick_ends_us",
    "gpu_at",
    "tick_at",
    *_COUNTERS,
    "late",
)
PACKED_TYPES = (
    "String",
    "String",
    "UInt64",
    "String",
    "UInt64",
    "UInt64",
    "UInt32",
    "UInt64",
    "Array(String)",
    "Array(UInt32)",
    "Array(String)",
    "Array(String)",
    "Array(String)",
    "Array(UInt64)",
    "Array(UInt64)",
    "Array(UInt32)",
    "Array(UInt32)",
    *(["Array(UInt64)"] * 5),
    "Array(UInt8)",
)


def packed_rows(messages: list[SourceMessage], partition: int) -> list[tuple[Any, ...]]:
    """The packed ledger rows (0008) of accepted, on-time reports, as the worker wrote them."""
    codec, rows = ReportCodec(), []
    for m in messages:
        r = codec.decode(m.value)
        holdings: dict[tuple[Any, ...], int] = {}
        ticks: dict[tuple[Any, ...], int] = {}
        gpu_at, tick_at = [], []
        for s in r["samples"]:
            gpu_at.append(holdings.setdefault(tuple(s[f] for f in _HOLDING), len(holdings) + 1))
            tick_at.append(ticks.setdefault(tuple(s[f] for f in _TICK), len(ticks) + 1))
        report = (
            r["node_id"],
            r["boot_id"],
            r["seq"],
            r["cluster"],
            r["interval_start_us"],
            r["interval_end_us"],
            partition,
            m.offset,
        )
        rows.append(
            (
                *report,
                *(list(c) for c in zip(*holdings, strict=True)),
                *(list(c) for c in zip(*ticks, strict=True)),
                gpu_at,
                tick_at,
                *([s[c] for s in r["samples"]] for c in _COUNTERS),
                [0] * len(r["samples"]),
            )
        )
    return rows


def first_table(migration: str) -> str:
    """The migration's first statement (its CREATE TABLE), comments left out."""
    text = (ROOT / "warehouse/migrations" / migration).read_text()
    return Migration(0, migration, text).statements("ledger_shape")[0]


def main() -> None:
    stack = json.loads((ROOT / ".stack" / "stack.json").read_text())
    port, pid = stack["clickhouse_http_port"], stack["clickhouse_pid"]

    def query(sql: str, body: bytes = b"", database: str = "ledger_shape") -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        params = urllib.parse.urlencode({"query": sql, "database": database})
        conn.request("POST", f"/?{params}", body=body)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if response.status != 200:
            raise RuntimeError(data[:500].decode(errors="replace"))
        return data

    def settle() -> None:
        """Until no merge has run for three checks in a row, a second apart."""
        quiet = 0
        while quiet < 3:
            time.sleep(1)
            running = int(query("SELECT count() FROM system.merges", database="default"))
            quiet = quiet + 1 if running == 0 else 0

    query("DROP DATABASE IF EXISTS ledger_shape", database="default")
    query("CREATE DATABASE ledger_shape", database="default")
    holdings = first_table("0013_ledger_by_holding.sql")
    query(first_table("0004_exactly_once.sql"))  # usage_ledger, one row per sample
    query(first_table("0008_ledger_packed.sql"))  # usage_ledger_packed
    query(holdings)
    query(holdings.replace(LEDGER_TABLE, "staging").replace("Replacing", ""))

    spec = FleetSpec(nodes=200, gpus_per_node=8, tenants=3, reports_per_node=400)
    messages = fleet_messages(spec)
    processor = FastPartitionProcessor(
        PartitionState("shape", 0), ProcessorSettings(lateness_us=10**12)
    )
    columns = ", ".join(LEDGER_COLUMNS)
    per_sample, packed_blocks, holding_blocks, samples = [], [], [], 0
    for at in range(0, len(messages), 5_000):
        batch = messages[at : at + 5_000]
        outcome = processor.process(batch)
        assert outcome.accepted_reports == len(batch) and not outcome.late_reports
        block = bytes(outcome.ledger)
        samples += outcome.ledger_samples
        holding_blocks.append(block)
        packed_blocks.append(encode_block(PACKED_NAMES, PACKED_TYPES, packed_rows(batch, 0)))
        query("TRUNCATE TABLE staging")
        query(f"INSERT INTO staging ({columns}) FORMAT Native", block)
        per_sample.append(query(TO_SAMPLE))
    query("DROP TABLE staging")

    for table, names, blocks in (
        ("usage_ledger", SAMPLE_COLUMNS, per_sample),
        ("usage_ledger_packed", ", ".join(PACKED_NAMES), packed_blocks),
        (LEDGER_TABLE, columns, holding_blocks),
    ):
        settle()  # the previous table's merges are not counted
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        for block in blocks:
            query(f"INSERT INTO {table} ({names}) FORMAT Native", block)
        seconds = time.monotonic() - started
        settle()  # the merges those inserts set off; counting only a fixed time after
        # the inserts misses the later merges (an earlier version of this script did)
        cpu = cpu_seconds(pid) - cpu_before
        sent = sum(len(block) for block in blocks) / samples
        print(
            f"{table:20} {samples / seconds:>10,.0f} samples/s inserted, {sent:5.1f} bytes "
            f"sent per sample; ClickHouse CPU {cpu:.1f} s = {cpu / samples * 1e6:.2f} s per "
            "million samples"
        )
    query("DROP DATABASE ledger_shape", database="default")


if __name__ == "__main__":
    main()
