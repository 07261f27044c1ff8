-- The ledger becomes one row per accepted report, its samples in parallel arrays (one
-- element per sample, in the report's order). Every sample is still stored, but
-- ClickHouse sorts, merges and deduplicates one row per report instead of 48: about two
-- thirds of the CPU per sample (docs/PERFORMANCE.md); ClickHouse limits the pipeline. A
-- replayed report collapses onto the row it already wrote: the identity is
-- (node_id, boot_id, seq), and the worker's seq tracking never accepts an identity twice.
CREATE TABLE IF NOT EXISTS usage_ledger_reports (
    node_id String,
    boot_id String,
    seq UInt64,
    cluster String,
    interval_start_us UInt64,
    interval_end_us UInt64,
    source_partition UInt32,
    source_offset UInt64,
    gpu_uuid Array(String),
    gpu_index Array(UInt32),
    sku Array(String),
    tenant_id Array(String),
    job_id Array(String),
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
ORDER BY (node_id, boot_id, seq);

-- Rows written before this migration stay where they are, under a name that says what
-- they are; nothing writes to that table any more.
RENAME TABLE usage_ledger TO usage_ledger_by_sample;

-- What finance reads: one row per accepted sample, deduplicated, from both tables, with
-- the columns and names the per-sample table had.
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
    busy_us, unhealthy_us, energy_mj, memory_peak_bytes, late;
