-- The packed ledger (0008) is sorted by report identity alone, so a question about one day
-- or one month reads every report of the month partition: reconciling a day of a large
-- fleet read the whole month. The same table, now sorted by the hour of the report first:
-- a period's reports are a range of the primary key. The identity (node_id, boot_id, seq)
-- still decides deduplication: a replayed report has the same interval, so the same hour.
-- Rows written before this migration stay, under the name usage_ledger_packed_0008; the
-- view and reconciliation read them too. The RENAME is skipped on a rerun once done
-- (warehouse/migrate.py); every other statement can run again.
RENAME TABLE usage_ledger_packed TO usage_ledger_packed_0008;

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
ORDER BY (intDiv(interval_start_us, 3600000000), node_id, boot_id, seq);

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
FROM {db}.usage_ledger_packed_0008 FINAL
ARRAY JOIN
    gpu_at, tick_at, allocated_us, busy_us, unhealthy_us, energy_mj, memory_peak_bytes, late
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
