"""What the ledger's shape costs ClickHouse: one row per sample (migration 0004) against one
row per report with per-sample arrays (0007, what the worker writes now), under
back-to-back inserts.

Run against the local stack (``.venv/bin/meter stack up`` first):

    .venv/bin/python scripts/bench_ledger_shape.py

It meters a simulated fleet with the hot path into 5,000-message Native ledger blocks,
spreads the same rows out one per sample inside ClickHouse, then inserts each shape into
its own ReplacingMergeTree table and reports samples/s and ClickHouse CPU seconds per
million samples (the inserts, then every merge they set off, until none runs). The
numbers are in docs/PERFORMANCE.md; this is an experiment, not part of the pipeline.
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

ROOT = Path(__file__).parents[1]
SAMPLE_COLUMNS = (
    "node_id, boot_id, seq, gpu_uuid, tick_start_us, tick_end_us, gpu_index, cluster, sku, "
    "tenant_id, job_id, allocated_us, busy_us, unhealthy_us, energy_mj, memory_peak_bytes, "
    "source_partition, source_offset, late"
)
SPREAD = (
    f"SELECT {SAMPLE_COLUMNS} FROM staging ARRAY JOIN gpu_uuid, gpu_index, sku, tenant_id, "
    "job_id, tick_start_us, tick_end_us, allocated_us, busy_us, unhealthy_us, energy_mj, "
    "memory_peak_bytes, late FORMAT Native"
)


def first_table(migration: str) -> str:
    sql = (ROOT / "warehouse/migrations" / migration).read_text().split(";")[0]
    return sql[sql.index("CREATE TABLE") :]


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
    by_report = first_table("0007_ledger_by_report.sql")
    query(first_table("0004_exactly_once.sql"))  # usage_ledger, one row per sample
    query(by_report)
    query(by_report.replace(LEDGER_TABLE, "staging").replace("Replacing", ""))

    spec = FleetSpec(nodes=200, gpus_per_node=8, tenants=3, reports_per_node=400)
    messages = fleet_messages(spec)
    processor = FastPartitionProcessor(
        PartitionState("shape", 0), ProcessorSettings(lateness_us=10**12)
    )
    columns = ", ".join(LEDGER_COLUMNS)
    per_sample, per_report, samples = [], [], 0
    for at in range(0, len(messages), 5_000):
        outcome = processor.process(messages[at : at + 5_000])
        block = bytes(outcome.ledger)
        samples += outcome.ledger_samples
        per_report.append(block)
        query("TRUNCATE TABLE staging")
        query(f"INSERT INTO staging ({columns}) FORMAT Native", block)
        per_sample.append(query(SPREAD))
    query("DROP TABLE staging")

    for table, names, blocks in (
        ("usage_ledger", SAMPLE_COLUMNS, per_sample),
        (LEDGER_TABLE, columns, per_report),
    ):
        settle()  # the previous table's merges are not counted
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        for block in blocks:
            query(f"INSERT INTO {table} ({names}) FORMAT Native", block)
        seconds = time.monotonic() - started
        settle()  # the merges those inserts set off; counting only a fixed time after
        # the inserts misses the later merges (an earlier version of this script did)
        cpu = cpu_seconds(pid) - cpu_before
        print(
            f"{table:20} {samples / seconds:>10,.0f} samples/s inserted; ClickHouse CPU "
            f"{cpu:.1f} s = {cpu / samples * 1e6:.2f} s per million samples"
        )
    query("DROP DATABASE ledger_shape", database="default")


if __name__ == "__main__":
    main()
