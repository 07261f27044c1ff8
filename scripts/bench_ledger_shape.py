"""What the ledger's shape costs ClickHouse: one row per sample (today) against one row per
report with per-sample arrays (a proposal), under back-to-back inserts.

Run against the local stack (``.venv/bin/meter stack up`` first):

    .venv/bin/python scripts/bench_ledger_shape.py

It meters a simulated fleet with the hot path into 5,000-message Native ledger blocks,
regroups the same rows per report inside ClickHouse, then inserts each shape into its own
ReplacingMergeTree table and reports samples/s and ClickHouse CPU seconds per million
samples (inserts plus the merges they cause, over twice the insert time). The numbers go
to docs/PERFORMANCE.md; this is an experiment, not part of the pipeline.
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
from streams.native import LEDGER_COLUMNS
from streams.processor import ProcessorSettings
from streams.state import PartitionState

ROOT = Path(__file__).parents[1]
BY_REPORT = """CREATE TABLE ledger_by_report (
    node_id String, boot_id String, seq UInt64, cluster String, source_partition UInt32,
    source_offset UInt64, gpu_uuid Array(String), tick_start_us Array(UInt64),
    tick_end_us Array(UInt64), gpu_index Array(UInt32), sku Array(String),
    tenant_id Array(String), job_id Array(String), allocated_us Array(UInt64),
    busy_us Array(UInt64), unhealthy_us Array(UInt64), energy_mj Array(UInt64),
    memory_peak_bytes Array(UInt64), late Array(UInt8),
    interval_start DateTime MATERIALIZED toDateTime(intDiv(tick_start_us[1], 1000000))
) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(interval_start)
ORDER BY (node_id, boot_id, seq)"""
REGROUP = """SELECT node_id, boot_id, seq, any(cluster), any(source_partition),
    any(source_offset), groupArray(gpu_uuid), groupArray(tick_start_us),
    groupArray(tick_end_us), groupArray(gpu_index), groupArray(sku), groupArray(tenant_id),
    groupArray(job_id), groupArray(allocated_us), groupArray(busy_us),
    groupArray(unhealthy_us), groupArray(energy_mj), groupArray(memory_peak_bytes),
    groupArray(late)
FROM staging GROUP BY node_id, boot_id, seq FORMAT Native"""
REPORT_COLUMNS = (
    "node_id, boot_id, seq, cluster, source_partition, source_offset, gpu_uuid, "
    "tick_start_us, tick_end_us, gpu_index, sku, tenant_id, job_id, allocated_us, busy_us, "
    "unhealthy_us, energy_mj, memory_peak_bytes, late"
)


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

    query("DROP DATABASE IF EXISTS ledger_shape", database="default")
    query("CREATE DATABASE ledger_shape", database="default")
    sql = (ROOT / "warehouse/migrations/0004_exactly_once.sql").read_text().split(";")[0]
    per_sample = sql[sql.index("CREATE TABLE") :]
    query(per_sample)
    query(BY_REPORT)
    query(per_sample.replace("usage_ledger", "staging").replace("Replacing", ""))

    spec = FleetSpec(nodes=200, gpus_per_node=8, tenants=3, reports_per_node=400)
    messages = fleet_messages(spec)
    processor = FastPartitionProcessor(
        PartitionState("shape", 0), ProcessorSettings(lateness_us=10**12)
    )
    columns = ", ".join(LEDGER_COLUMNS)
    by_sample, by_report, samples = [], [], 0
    for at in range(0, len(messages), 5_000):
        outcome = processor.process(messages[at : at + 5_000])
        block = bytes(outcome.ledger)
        samples += outcome.ledger_rows
        by_sample.append(block)
        query("TRUNCATE TABLE staging")
        query(f"INSERT INTO staging ({columns}) FORMAT Native", block)
        by_report.append(query(REGROUP))
    query("DROP TABLE staging")

    for table, names, blocks in (
        ("usage_ledger", columns, by_sample),
        ("ledger_by_report", REPORT_COLUMNS, by_report),
    ):
        time.sleep(5)  # let the previous table's merges finish
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        for block in blocks:
            query(f"INSERT INTO {table} ({names}) FORMAT Native", block)
        seconds = time.monotonic() - started
        time.sleep(seconds)  # the merges those inserts set off
        cpu = cpu_seconds(pid) - cpu_before
        print(
            f"{table:17} {samples / seconds:>10,.0f} samples/s inserted; ClickHouse CPU "
            f"{cpu:.1f} s = {cpu / samples * 1e6:.2f} s per million samples"
        )
    query("DROP DATABASE ledger_shape", database="default")


if __name__ == "__main__":
    main()
