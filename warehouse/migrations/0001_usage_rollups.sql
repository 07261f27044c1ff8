-- Rollups of allocated GPU time per (tenant, sku, cluster, 1-minute window), written as
-- cumulative partials per source partition: a worker rewrites a window's row each time it
-- grows, with version = the input offset it has applied through. ReplacingMergeTree keeps
-- the highest version per key, so a re-sent row is harmless. Readers sum the partials of
-- a window over FINAL (the usage_* views do this; nobody else has to know).
CREATE TABLE IF NOT EXISTS usage_rollup_partials (
    tenant_id String,
    sku String,
    cluster String,
    window_start DateTime('UTC'),
    source_partition UInt32,
    allocated_us UInt64,
    busy_us UInt64,
    unhealthy_us UInt64,
    energy_mj UInt64,
    sample_count UInt64,
    version UInt64,
    written_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, window_start, sku, cluster, source_partition);
