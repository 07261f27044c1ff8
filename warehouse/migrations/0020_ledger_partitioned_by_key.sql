-- The ledger partitioned by the month of interval_start_us, a column of its sort key, rather
-- than by interval_start (a DateTime materialized from it, outside the key). Under FINAL,
-- current ClickHouse prunes no partition by a column outside the sort key (a part it
-- skipped could hold the latest version of a row), and 18.16 reads the edge granule of the
-- key range in every part: a question about one day read a granule of every month of
-- history, and its cost grew with the history. Partitioned by the key column, both engines
-- read only the parts of the months asked about, from interval_start_us alone. The rows,
-- the key and the partition names (YYYYMM) are as before; interval_start stays, for the
-- queries that name it. The table written before is renamed aside and copied into this one
-- day by day (warehouse/ledger_copy.py, copy_moved_aside) before the migration is recorded;
-- it stays, unread, until an operator drops it. The RENAME is skipped on a rerun once done
-- (warehouse/migrate.py); every other statement and the copy can run again.
RENAME TABLE usage_ledger_holdings TO usage_ledger_holdings_0013;

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
PARTITION BY toYYYYMM(toDateTime(intDiv(interval_start_us, 1000000), 'UTC'))
ORDER BY (tenant_id, sku, interval_start_us, node_id, boot_id, seq, gpu_uuid, gpu_index, job_id);

