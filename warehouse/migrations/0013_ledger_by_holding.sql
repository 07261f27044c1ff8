-- The ledger, one row per accepted report and GPU holding (a distinct GPU, index, SKU,
-- tenant and job of the report), its samples' ticks and counters as arrays in report order.
-- The packed ledger (0008, 0012) stored a report's holdings once and had each sample name
-- its holding by position, so spelling a sample out copied its report's holding arrays:
-- a report of 8,192 GPUs cost 4 GiB to read, and any filter on tenant or SKU had to spell
-- every sample of the period out first. Here the tenant, the SKU and the report's start
-- are plain columns the table is sorted by: a question about one tenant and period reads
-- that key range, and a sample costs the same whatever the size of its report.
-- The sort key is the row's identity: a replayed report writes the same rows.
CREATE TABLE IF NOT EXISTS usage_ledger_holdings (
    node_id String,
    boot_id String,
    seq UInt64,
    cluster String,
    interval_start_us UInt64,
    interval_end_us UInt64,
    source_partition UInt32,
    source_offset UInt64,
    gpu_uuid String,
    gpu_index UInt32,
    sku String,
    tenant_id String,
    job_id String,
    tick_start_us Array(UInt64),
    tick_end_us Array(UInt64),
    allocated_us Array(UInt64),
    busy_us Array(UInt64),
    unhealthy_us Array(UInt64),
    energy_mj Array(UInt64),
    memory_peak_bytes Array(UInt64),
    late Array(UInt8),
    interval_start DateTime('UTC') MATERIALIZED toDateTime(intDiv(interval_start_us, 1000000))
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(interval_start)
ORDER BY (tenant_id, sku, interval_start_us, node_id, boot_id, seq, gpu_uuid, gpu_index, job_id);

-- The view deduplicates with GROUP BY over the identity rather than FINAL, so that a WHERE
-- on any of its columns (tenant_id, sku, interval_start_us, node_id, ...) reaches the
-- table's key on both engines (18.16 pushes nothing into FINAL). Every earlier ledger
-- table is copied into the new one by the migration (warehouse/backfill.py), so the view
-- reads this table alone.
DROP TABLE IF EXISTS usage_ledger;

CREATE VIEW IF NOT EXISTS usage_ledger AS
SELECT
    node_id, boot_id, seq, gpu_uuid, tick_start_us, tick_end_us, gpu_index, cluster, sku,
    tenant_id, job_id, allocated_us, busy_us, unhealthy_us, energy_mj, memory_peak_bytes,
    h_partition AS source_partition, h_offset AS source_offset, late, interval_start_us,
    interval_end_us
FROM (
    SELECT
        tenant_id, sku, interval_start_us, node_id, boot_id, seq, gpu_uuid, gpu_index,
        job_id, cluster, interval_end_us,
        any(source_partition) AS h_partition, any(source_offset) AS h_offset,
        any(tick_start_us) AS h_tick_start_us, any(tick_end_us) AS h_tick_end_us,
        any(allocated_us) AS h_allocated_us, any(busy_us) AS h_busy_us,
        any(unhealthy_us) AS h_unhealthy_us, any(energy_mj) AS h_energy_mj,
        any(memory_peak_bytes) AS h_memory_peak_bytes, any(late) AS h_late
    FROM {db}.usage_ledger_holdings
    GROUP BY
        tenant_id, sku, interval_start_us, node_id, boot_id, seq, gpu_uuid, gpu_index,
        job_id, cluster, interval_end_us
)
ARRAY JOIN
    h_tick_start_us AS tick_start_us, h_tick_end_us AS tick_end_us,
    h_allocated_us AS allocated_us, h_busy_us AS busy_us, h_unhealthy_us AS unhealthy_us,
    h_energy_mj AS energy_mj, h_memory_peak_bytes AS memory_peak_bytes, h_late AS late;
