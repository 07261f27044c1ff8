"""What the ledger's shape costs ClickHouse, under back-to-back inserts: one row per
sample (migration 0004), one row per report with every sample's fields in arrays (0007),
and one row per report with its holdings and ticks stored once (0008, what the worker
writes now).

Run against the local stack (``.venv/bin/meter stack up`` first):

    .venv/bin/python scripts/bench_ledger_shape.py

It meters a simulated fleet with the hot path into 5,000-message Native ledger blocks,
rewrites the same rows into the two older shapes inside ClickHouse, then inserts each
shape into its own ReplacingMergeTree table and reports samples/s, bytes sent per sample
and ClickHouse CPU seconds per million samples (the inserts, then every merge they set
off, until none runs). The numbers are in docs/PERFORMANCE.md; this is an experiment,
not part of the pipeline.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from pathlib import Path

from agent.fleet import FleetSpec
from meter.bench_e2e import cpu_seconds
from meter.bench_hotpath import fleet_messages
from streams.hotpath.processor import FastPartitionProcessor
from streams.native import LEDGER_COLUMNS, LEDGER_TABLE
from streams.processor import ProcessorSettings
from streams.state import PartitionState
from warehouse.migrate import Migration

ROOT = Path(__file__).parents[1]
_REPORT = (
    "node_id", "boot_id", "seq", "cluster", "interval_start_us", "interval_end_us",
    "source_partition", "source_offset",
)  # fmt: skip
# Each sample's fields, as the usage_ledger view spells a packed row out.
_SAMPLE = {
    "gpu_uuid": "gpu_uuids[gpu_at]", "gpu_index": "gpu_indexes[gpu_at]",
    "sku": "skus[gpu_at]", "tenant_id": "tenant_ids[gpu_at]", "job_id": "job_ids[gpu_at]",
    "tick_start_us": "tick_starts_us[tick_at]", "tick_end_us": "tick_ends_us[tick_at]",
    **{c: c for c in (
        "allocated_us", "busy_us", "unhealthy_us", "energy_mj", "memory_peak_bytes", "late",
    )},
}  # fmt: skip
# The per-sample table has no report interval.
_PER_SAMPLE_REPORT = tuple(c for c in _REPORT if not c.startswith("interval_"))
SAMPLE_COLUMNS = ", ".join((*_PER_SAMPLE_REPORT, *_SAMPLE))
REPORT_COLUMNS = ", ".join((*_REPORT, *_SAMPLE))  # the sample fields as arrays


def _spread(report: tuple[str, ...], suffix: str) -> str:
    """Staged packed rows as one row per sample, the sample fields named name + suffix."""
    return (
        f"SELECT {', '.join(report)}, "
        + ", ".join(
            v if v == name + suffix else f"{v} AS {name}{suffix}" for name, v in _SAMPLE.items()
        )
        + " FROM staging ARRAY JOIN gpu_at, tick_at, allocated_us, busy_us, unhealthy_us, "
        "energy_mj, memory_peak_bytes, late"
    )


TO_SAMPLE = _spread(_PER_SAMPLE_REPORT, "") + " FORMAT Native"
# Back into one row per report. 18.16's lambdas cannot read other columns, so not
# arrayMap: group the spread rows again (the arrays of one group are in one order).
TO_REPORT = (
    f"SELECT {', '.join(_REPORT)}, "
    + ", ".join(f"groupArray({name}_) AS {name}" for name in _SAMPLE)
    + f" FROM ({_spread(_REPORT, '_')}) GROUP BY {', '.join(_REPORT)} FORMAT Native"
)


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
    packed = first_table("0008_ledger_packed.sql")
    query(first_table("0004_exactly_once.sql"))  # usage_ledger, one row per sample
    query(first_table("0007_ledger_by_report.sql"))  # usage_ledger_reports
    query(packed)
    query(packed.replace(LEDGER_TABLE, "staging").replace("Replacing", ""))

    spec = FleetSpec(nodes=200, gpus_per_node=8, tenants=3, reports_per_node=400)
    messages = fleet_messages(spec)
    processor = FastPartitionProcessor(
        PartitionState("shape", 0), ProcessorSettings(lateness_us=10**12)
    )
    columns = ", ".join(LEDGER_COLUMNS)
    per_sample, per_report, packed_blocks, samples = [], [], [], 0
    for at in range(0, len(messages), 5_000):
        outcome = processor.process(messages[at : at + 5_000])
        block = bytes(outcome.ledger)
        samples += outcome.ledger_samples
        packed_blocks.append(block)
        query("TRUNCATE TABLE staging")
        query(f"INSERT INTO staging ({columns}) FORMAT Native", block)
        per_report.append(query(TO_REPORT))
        per_sample.append(query(TO_SAMPLE))
    query("DROP TABLE staging")

    for table, names, blocks in (
        ("usage_ledger", SAMPLE_COLUMNS, per_sample),
        ("usage_ledger_reports", REPORT_COLUMNS, per_report),
        (LEDGER_TABLE, columns, packed_blocks),
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
