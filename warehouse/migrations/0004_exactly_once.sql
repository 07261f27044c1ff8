-- The ledger: one row per accepted GPU sample, keyed by its identity, so a re-inserted
-- batch collapses onto the rows it already wrote. late = 1 when (part of) the sample was
-- metered as an adjustment because its window had closed.
CREATE TABLE IF NOT EXISTS usage_ledger (
    node_id String,
    boot_id String,
    seq UInt64,
    gpu_uuid String,
    tick_start_us UInt64,
    tick_end_us UInt64,
    gpu_index UInt32,
    cluster String,
    sku String,
    tenant_id String,
    job_id String,
    allocated_us UInt64,
    busy_us UInt64,
    unhealthy_us UInt64,
    energy_mj UInt64,
    memory_peak_bytes UInt64,
    source_partition UInt32,
    source_offset UInt64,
    late UInt8,
    tick_start DateTime('UTC') MATERIALIZED toDateTime(intDiv(tick_start_us, 1000000))
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(tick_start)
ORDER BY (tenant_id, node_id, boot_id, seq, gpu_uuid, tick_start_us);

-- Usage that arrived after its window closed, per (window key, late report). Keyed by the
-- report's source offset: replaying it rewrites the same row; it never touches a partial.
CREATE TABLE IF NOT EXISTS usage_adjustments (
    tenant_id String,
    sku String,
    cluster String,
    window_start DateTime('UTC'),
    source_partition UInt32,
    source_offset UInt64,
    allocated_us UInt64,
    busy_us UInt64,
    unhealthy_us UInt64,
    energy_mj UInt64,
    sample_count UInt64,
    recorded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, window_start, sku, cluster, source_partition, source_offset);

-- Missing report seqs per (node, boot): possible data loss until a late report fills
-- them. Rewritten (higher version = source offset) when a gap shrinks, splits or closes.
CREATE TABLE IF NOT EXISTS seq_gaps (
    node_id String,
    boot_id String,
    first_missing UInt64,
    last_missing UInt64,
    first_seen DateTime('UTC'),
    is_open UInt8,
    source_partition UInt32,
    version UInt64,
    updated_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
ORDER BY (node_id, boot_id, first_missing);

-- Each input partition's processing state (compressed JSON), written last in every batch:
-- the offset it has applied through, open windows, node seqs, counters. A worker that
-- takes over a partition resumes from the highest applied_offset.
CREATE TABLE IF NOT EXISTS partition_state (
    topic String,
    partition UInt32,
    applied_offset Int64,
    accepted_reports UInt64,
    accepted_samples UInt64,
    duplicate_reports UInt64,
    late_reports UInt64,
    rejected_reports UInt64,
    open_gaps UInt64,
    state String,
    written_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(applied_offset)
ORDER BY (topic, partition);
