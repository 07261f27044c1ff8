-- Usage at hour and day grain beside the minute tables, written by the worker in the same
-- scheme (streams/processing/grains.py): cumulative partials per source partition with version = the
-- input offset applied through, and late usage per (window, late report). A day or month
-- question reads 60 or 1,440 times fewer rows. warehouse/backfill.py fills both grains
-- from the minute tables for rows written before this migration.
CREATE TABLE IF NOT EXISTS usage_hour_partials (
    tenant_id String,
    sku String,
    cluster String,
    hour_start DateTime('UTC'),
    source_partition UInt32,
    allocated_us UInt64,
    busy_us UInt64,
    unhealthy_us UInt64,
    energy_mj UInt64,
    sample_count UInt64,
    version UInt64,
    written_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour_start)
ORDER BY (tenant_id, hour_start, sku, cluster, source_partition);

CREATE TABLE IF NOT EXISTS usage_hour_adjustments (
    tenant_id String,
    sku String,
    cluster String,
    hour_start DateTime('UTC'),
    source_partition UInt32,
    source_offset UInt64,
    allocated_us UInt64,
    busy_us UInt64,
    unhealthy_us UInt64,
    energy_mj UInt64,
    sample_count UInt64,
    recorded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(hour_start)
ORDER BY (tenant_id, hour_start, sku, cluster, source_partition, source_offset);

CREATE TABLE IF NOT EXISTS usage_day_partials (
    tenant_id String,
    sku String,
    cluster String,
    day Date,
    source_partition UInt32,
    allocated_us UInt64,
    busy_us UInt64,
    unhealthy_us UInt64,
    energy_mj UInt64,
    sample_count UInt64,
    version UInt64,
    written_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, sku, cluster, source_partition);

CREATE TABLE IF NOT EXISTS usage_day_adjustments (
    tenant_id String,
    sku String,
    cluster String,
    day Date,
    source_partition UInt32,
    source_offset UInt64,
    allocated_us UInt64,
    busy_us UInt64,
    unhealthy_us UInt64,
    energy_mj UInt64,
    sample_count UInt64,
    recorded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, sku, cluster, source_partition, source_offset);

-- The views now read the coarsest table that answers them, and pick each key's latest
-- version with argMax instead of FINAL: ClickHouse 18.16 pushes a query's WHERE into a
-- view through GROUP BY and UNION ALL (enable_optimize_predicate_expression = 1, set in
-- the users' profiles), but never into FINAL, so a filtered question reads only its rows.
-- Partials are deterministic per (key, version) and a late report's adjustment per
-- (key, offset), so the row picked among equal copies does not matter. Inner columns are
-- named apart (p_*) because 18.16 would resolve the outer aliases inside the aggregates.
DROP TABLE IF EXISTS usage_by_minute_detail;
DROP TABLE IF EXISTS usage_by_minute;
DROP TABLE IF EXISTS usage_by_hour;
DROP TABLE IF EXISTS usage_by_day;
DROP TABLE IF EXISTS usage_by_month;
DROP TABLE IF EXISTS contract_position_by_month;
DROP TABLE IF EXISTS unhealthy_by_month;

CREATE VIEW IF NOT EXISTS usage_by_minute_detail AS
SELECT
    tenant_id, sku, cluster, window_start,
    sum(p_allocated_us) AS allocated_us,
    sum(p_busy_us) AS busy_us,
    sum(p_unhealthy_us) AS unhealthy_us,
    sum(p_energy_mj) AS energy_mj,
    sum(p_sample_count) AS sample_count,
    sumIf(p_allocated_us, is_late = 1) AS late_allocated_us,
    sumIf(p_sample_count, is_late = 1) AS late_sample_count
FROM (
    SELECT tenant_id, sku, cluster, window_start, source_partition,
           argMax(allocated_us, version) AS p_allocated_us,
           argMax(busy_us, version) AS p_busy_us,
           argMax(unhealthy_us, version) AS p_unhealthy_us,
           argMax(energy_mj, version) AS p_energy_mj,
           argMax(sample_count, version) AS p_sample_count,
           toUInt8(0) AS is_late
    FROM {db}.usage_rollup_partials
    GROUP BY tenant_id, sku, cluster, window_start, source_partition
    UNION ALL
    SELECT tenant_id, sku, cluster, window_start, source_partition,
           any(allocated_us) AS p_allocated_us, any(busy_us) AS p_busy_us,
           any(unhealthy_us) AS p_unhealthy_us, any(energy_mj) AS p_energy_mj,
           any(sample_count) AS p_sample_count, toUInt8(1) AS is_late
    FROM {db}.usage_adjustments
    GROUP BY tenant_id, sku, cluster, window_start, source_partition, source_offset
) AS parts
GROUP BY tenant_id, sku, cluster, window_start;

CREATE VIEW IF NOT EXISTS usage_by_minute AS
SELECT tenant_id, sku, cluster, window_start, allocated_us, busy_us, unhealthy_us,
       energy_mj, sample_count
FROM {db}.usage_by_minute_detail;

CREATE VIEW IF NOT EXISTS usage_by_hour AS
SELECT
    tenant_id, sku, cluster, hour_start,
    sum(p_allocated_us) AS allocated_us,
    sum(p_busy_us) AS busy_us,
    sum(p_unhealthy_us) AS unhealthy_us,
    sum(p_energy_mj) AS energy_mj,
    sum(p_sample_count) AS sample_count
FROM (
    SELECT tenant_id, sku, cluster, hour_start, source_partition,
           argMax(allocated_us, version) AS p_allocated_us,
           argMax(busy_us, version) AS p_busy_us,
           argMax(unhealthy_us, version) AS p_unhealthy_us,
           argMax(energy_mj, version) AS p_energy_mj,
           argMax(sample_count, version) AS p_sample_count
    FROM {db}.usage_hour_partials
    GROUP BY tenant_id, sku, cluster, hour_start, source_partition
    UNION ALL
    SELECT tenant_id, sku, cluster, hour_start, source_partition,
           any(allocated_us) AS p_allocated_us, any(busy_us) AS p_busy_us,
           any(unhealthy_us) AS p_unhealthy_us, any(energy_mj) AS p_energy_mj,
           any(sample_count) AS p_sample_count
    FROM {db}.usage_hour_adjustments
    GROUP BY tenant_id, sku, cluster, hour_start, source_partition, source_offset
) AS parts
GROUP BY tenant_id, sku, cluster, hour_start;

-- The day view's exact sums, without the Decimal columns; usage_by_day and usage_by_month
-- read it.
CREATE VIEW IF NOT EXISTS usage_by_day_exact AS
SELECT
    tenant_id, sku, cluster, day,
    sum(p_allocated_us) AS allocated_us,
    sum(p_busy_us) AS busy_us,
    sum(p_unhealthy_us) AS unhealthy_us,
    sum(p_energy_mj) AS energy_mj,
    sum(p_sample_count) AS sample_count
FROM (
    SELECT tenant_id, sku, cluster, day, source_partition,
           argMax(allocated_us, version) AS p_allocated_us,
           argMax(busy_us, version) AS p_busy_us,
           argMax(unhealthy_us, version) AS p_unhealthy_us,
           argMax(energy_mj, version) AS p_energy_mj,
           argMax(sample_count, version) AS p_sample_count
    FROM {db}.usage_day_partials
    GROUP BY tenant_id, sku, cluster, day, source_partition
    UNION ALL
    SELECT tenant_id, sku, cluster, day, source_partition,
           any(allocated_us) AS p_allocated_us, any(busy_us) AS p_busy_us,
           any(unhealthy_us) AS p_unhealthy_us, any(energy_mj) AS p_energy_mj,
           any(sample_count) AS p_sample_count
    FROM {db}.usage_day_adjustments
    GROUP BY tenant_id, sku, cluster, day, source_partition, source_offset
) AS parts
GROUP BY tenant_id, sku, cluster, day;

-- GPU-hours are shown as Decimal (9 places, truncated); the µs columns are the exact figures.
CREATE VIEW IF NOT EXISTS usage_by_day AS
SELECT tenant_id, sku, cluster, day, allocated_us,
       toDecimal128(allocated_us, 9) / 3600000000 AS allocated_gpu_hours,
       busy_us, unhealthy_us,
       toDecimal128(unhealthy_us, 9) / 3600000000 AS unhealthy_gpu_hours,
       energy_mj,
       toDecimal128(energy_mj, 9) / 3600000000 AS energy_kwh,
       sample_count
FROM {db}.usage_by_day_exact;

CREATE VIEW IF NOT EXISTS usage_by_month AS
SELECT tenant_id, sku, cluster, month, allocated_us,
       toDecimal128(allocated_us, 9) / 3600000000 AS allocated_gpu_hours,
       busy_us, unhealthy_us,
       toDecimal128(unhealthy_us, 9) / 3600000000 AS unhealthy_gpu_hours,
       energy_mj,
       toDecimal128(energy_mj, 9) / 3600000000 AS energy_kwh,
       sample_count
FROM (
    SELECT tenant_id, sku, cluster, toStartOfMonth(day) AS month,
           sum(d_allocated_us) AS allocated_us, sum(d_busy_us) AS busy_us,
           sum(d_unhealthy_us) AS unhealthy_us, sum(d_energy_mj) AS energy_mj,
           sum(d_sample_count) AS sample_count
    FROM (
        SELECT tenant_id, sku, cluster, day, allocated_us AS d_allocated_us,
               busy_us AS d_busy_us, unhealthy_us AS d_unhealthy_us, energy_mj AS d_energy_mj,
               sample_count AS d_sample_count
        FROM {db}.usage_by_day_exact
    ) AS days
    GROUP BY tenant_id, sku, cluster, month
) AS months;

-- Per contract and calendar month of its term: allocated GPU time against the committed
-- capacity (committed GPUs × the seconds of the month inside the term). Terms run in
-- whole UTC days (billing/contracts.py), so the day rollups answer it. Towards committed
-- GPUs an "<N>g" MIG instance counts N/7 of its parent GPU (migration 0010).
CREATE VIEW IF NOT EXISTS contract_position_by_month AS
SELECT m.contract_id AS contract_id, m.tenant_id AS tenant_id, m.month AS month,
       m.committed_gpus AS committed_gpus,
       m.committed_gpu_us AS committed_gpu_us,
       u.used_us AS allocated_us,
       u.mig_us AS mig_slice_us,
       toDecimal128(u.used_us, 9) / 3600000000 AS allocated_gpu_hours,
       toDecimal128(m.committed_gpu_us, 9) / 3600000000 AS committed_gpu_hours,
       if(u.used_us > m.committed_gpu_us, u.used_us - m.committed_gpu_us, 0) AS overage_gpu_us,
       if(u.used_us < m.committed_gpu_us, m.committed_gpu_us - u.used_us, 0) AS shortfall_gpu_us,
       u.unhealthy_us AS unhealthy_us,
       m.minimum_monthly_commitment AS minimum_monthly_commitment,
       m.currency AS currency
FROM (
    SELECT contract_id, tenant_id, currency, committed_gpus, minimum_monthly_commitment,
           month,
           toUInt64(committed_gpus) * 1000000
               * (least(toUInt32(addMonths(month_start, 1)), toUInt32(term_end))
                  - greatest(toUInt32(month_start), toUInt32(term_start))) AS committed_gpu_us
    FROM (
        SELECT contract_id, tenant_id, currency, committed_gpus, minimum_monthly_commitment,
               term_start, term_end,
               arrayJoin(arrayMap(i -> addMonths(toStartOfMonth(term_start), i),
                                  range(toUInt32((toYear(term_end) - toYear(term_start)) * 12
                                                 + toMonth(term_end) - toMonth(term_start) + 1))))
                   AS month,
               toDateTime(month, 'UTC') AS month_start
        FROM {db}.contracts FINAL
    ) AS months
    WHERE month_start < term_end
) AS m
LEFT JOIN (
    SELECT contract_id, month, intDiv(sum(sevenths_us), 7) AS used_us, sum(slice_us) AS mig_us,
           sum(p_unhealthy_us) AS unhealthy_us
    FROM (
        SELECT c.contract_id AS contract_id, toStartOfMonth(u.day) AS month,
               u.allocated_us * if(position(u.sku, '-MIG-') > 0,
                                   least(toUInt64OrZero(extract(u.sku, '-MIG-([0-9]+)g')), 7),
                                   7) AS sevenths_us,
               if(position(u.sku, '-MIG-') > 0, u.allocated_us, 0) AS slice_us,
               u.unhealthy_us AS p_unhealthy_us
        FROM {db}.usage_by_day_exact AS u
        INNER JOIN (SELECT contract_id, tenant_id, toDate(term_start) AS first_day,
                           toDate(term_end) AS end_day
                    FROM {db}.contracts FINAL) AS c ON u.tenant_id = c.tenant_id
        WHERE u.day >= c.first_day AND u.day < c.end_day
    ) AS weighted
    GROUP BY contract_id, month
) AS u ON m.contract_id = u.contract_id AND m.month = u.month;

-- Allocated-but-unhealthy GPU time per tenant, SKU and month, and its share of allocated.
CREATE VIEW IF NOT EXISTS unhealthy_by_month AS
SELECT tenant_id, sku, month, allocated_us, unhealthy_us,
       toDecimal128(unhealthy_us, 9) / 3600000000 AS unhealthy_gpu_hours,
       toDecimal128(unhealthy_us, 9) * 100 / greatest(allocated_us, 1) AS unhealthy_percent
FROM (
    SELECT tenant_id, sku, month, sum(s_allocated_us) AS allocated_us,
           sum(s_unhealthy_us) AS unhealthy_us
    FROM (
        SELECT tenant_id, sku, month, allocated_us AS s_allocated_us,
               unhealthy_us AS s_unhealthy_us
        FROM {db}.usage_by_month
    ) AS per_cluster
    GROUP BY tenant_id, sku, month
) AS per_sku;
