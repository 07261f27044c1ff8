-- The ledger stays one row per accepted report, but a report's GPU holdings (GPU, index,
-- SKU, tenant, job) and ticks are each stored once, and every sample names its holding
-- and its tick by position (1-based). In a report of 8 GPUs x 6 ticks the strings made
-- up more than half the bytes, six copies each: this layout halves the bytes ClickHouse
-- parses, compresses and merges, and its CPU per sample (docs/PERFORMANCE.md).
-- The identity and the deduplication are those of migration 0007.
CREATE TABLE IF NOT EXISTS usage_ledger_packed (
    node_id String,
    boot_id String,
    seq UInt64,
    cluster String,
    interval_start_us UInt64,
    interval_end_us UInt64,
    source_partition UInt32,
    source_offset UInt64,
    gpu_uuids Array(String),
    gpu_indexes Array(UInt32),
    skus Array(String),
    tenant_ids Array(String),
    job_ids Array(String),
    tick_starts_us Array(UInt64),
    tick_ends_us Array(UInt64),
    gpu_at Array(UInt32),
    tick_at Array(UInt32),
    allocated_us Array(UInt64),
    busy_us Array(UInt64),
    unhealthy_us Array(UInt64),
    energy_mj Array(UInt64),
    memory_peak_bytes Array(UInt64),
    late Array(UInt8),
    interval_start DateTime('UTC') MATERIALIZED toDateTime(intDiv(interval_start_us, 1000000))
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(interval_start)
ORDER BY (node_id, boot_id, seq);

-- Rows written before this migration stay in usage_ledger_reports (0007) and
-- usage_ledger_by_sample (0004); the view reads all three. Every statement here can run
-- again after a failure.
DROP TABLE IF EXISTS usage_ledger;

CREATE VIEW IF NOT EXISTS usage_ledger AS
SELECT
    node_id, boot_id, seq, gpu_uuid, tick_start_us, tick_end_us, gpu_index, cluster, sku,
    tenant_id, job_id, allocated_us, busy_us, unhealthy_us, energy_mj, memory_peak_bytes,
    source_partition, source_offset, late
FROM {db}.usage_ledger_by_sample FINAL
UNION ALL
SELECT
    node_id, boot_id, seq, gpu_uuid, tick_start_us, tick_end_us, gpu_index, cluster, sku,
    tenant_id, job_id, allocated_us, busy_us, unhealthy_us, energy_mj, memory_peak_bytes,
    source_partition, source_offset, late
FROM {db}.usage_ledger_reports FINAL
ARRAY JOIN
    gpu_uuid, tick_start_us, tick_end_us, gpu_index, sku, tenant_id, job_id, allocated_us,
    busy_us, unhealthy_us, energy_mj, memory_peak_bytes, late
UNION ALL
SELECT
    node_id, boot_id, seq, gpu_uuids[gpu_at] AS gpu_uuid,
    tick_starts_us[tick_at] AS tick_start_us, tick_ends_us[tick_at] AS tick_end_us,
    gpu_indexes[gpu_at] AS gpu_index, cluster, skus[gpu_at] AS sku,
    tenant_ids[gpu_at] AS tenant_id, job_ids[gpu_at] AS job_id, allocated_us, busy_us,
    unhealthy_us, energy_mj, memory_peak_bytes, source_partition, source_offset, late
FROM {db}.usage_ledger_packed FINAL
ARRAY JOIN
    gpu_at, tick_at, allocated_us, busy_us, unhealthy_us, energy_mj, memory_peak_bytes, late;
