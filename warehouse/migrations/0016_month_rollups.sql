-- Usage at calendar-month grain beside the hour and day tables, written by the worker in
-- the same scheme (streams/processing/grains.py): cumulative partials per source partition with
-- version = the input offset applied through, and late usage per (month, late report).
-- A month question then reads a few thousand rows a month instead of every day of every
-- month: the commitment position joins usage with the contracts, and ClickHouse 18.16
-- filters no JOIN by the outer WHERE, so its usage side must be small whatever the
-- history. warehouse/backfill.py fills the months from the day tables for rows written
-- before this migration.
CREATE TABLE IF NOT EXISTS usage_month_partials (
    tenant_id String,
    sku String,
    cluster String,
    month Date,
    source_partition UInt32,
    allocated_us UInt64,
    busy_us UInt64,
    unhealthy_us UInt64,
    energy_mj UInt64,
    sample_count UInt64,
    version UInt64,
    written_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(month)
ORDER BY (tenant_id, month, sku, cluster, source_partition);

CREATE TABLE IF NOT EXISTS usage_month_adjustments (
    tenant_id String,
    sku String,
    cluster String,
    month Date,
    source_partition UInt32,
    source_offset UInt64,
    allocated_us UInt64,
    busy_us UInt64,
    unhealthy_us UInt64,
    energy_mj UInt64,
    sample_count UInt64,
    recorded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(month)
ORDER BY (tenant_id, month, sku, cluster, source_partition, source_offset);

DROP TABLE IF EXISTS unhealthy_by_month;
DROP TABLE IF EXISTS contract_position_by_month;
DROP TABLE IF EXISTS usage_by_month;

-- The month view's exact sums (the latest partial per key and partition, plus late usage),
-- as usage_by_day_exact is for days.
CREATE VIEW IF NOT EXISTS usage_by_month_exact AS
SELECT
    tenant_id, sku, cluster, month,
    sum(p_allocated_us) AS allocated_us,
    sum(p_busy_us) AS busy_us,
    sum(p_unhealthy_us) AS unhealthy_us,
    sum(p_energy_mj) AS energy_mj,
    sum(p_sample_count) AS sample_count
FROM (
    SELECT tenant_id, sku, cluster, month, source_partition,
           argMax(allocated_us, version) AS p_allocated_us,
           argMax(busy_us, version) AS p_busy_us,
           argMax(unhealthy_us, version) AS p_unhealthy_us,
           argMax(energy_mj, version) AS p_energy_mj,
           argMax(sample_count, version) AS p_sample_count
    FROM {db}.usage_month_partials
    GROUP BY tenant_id, sku, cluster, month, source_partition
    UNION ALL
    SELECT tenant_id, sku, cluster, month, source_partition,
           any(allocated_us) AS p_allocated_us, any(busy_us) AS p_busy_us,
           any(unhealthy_us) AS p_unhealthy_us, any(energy_mj) AS p_energy_mj,
           any(sample_count) AS p_sample_count
    FROM {db}.usage_month_adjustments
    GROUP BY tenant_id, sku, cluster, month, source_partition, source_offset
) AS parts
GROUP BY tenant_id, sku, cluster, month;

CREATE VIEW IF NOT EXISTS usage_by_month AS
SELECT tenant_id, sku, cluster, month, allocated_us,
       toDecimal128(allocated_us, 9) / 3600000000 AS allocated_gpu_hours,
       busy_us, unhealthy_us,
       toDecimal128(unhealthy_us, 9) / 3600000000 AS unhealthy_gpu_hours,
       energy_mj,
       toDecimal128(energy_mj, 9) / 3600000000 AS energy_kwh,
       sample_count
FROM {db}.usage_by_month_exact;

-- Per contract and calendar month of its term: allocated GPU time against the committed
-- capacity (committed GPUs × the seconds of the month inside the term). Terms run in
-- whole UTC days (billing/contracts.py): a month wholly inside a term is read from the
-- month rollups, and only the months where a term starts or ends in the middle from the
-- day rollups (of those months only, whatever the history). Towards committed GPUs an
-- "<N>g" MIG instance counts N/7 of its parent GPU (migration 0010).
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
        SELECT c.contract_id AS contract_id, u.month AS month,
               u.allocated_us * if(position(u.sku, '-MIG-') > 0,
                                   least(toUInt64OrZero(extract(u.sku, '-MIG-([0-9]+)g')), 7),
                                   7) AS sevenths_us,
               if(position(u.sku, '-MIG-') > 0, u.allocated_us, 0) AS slice_us,
               u.unhealthy_us AS p_unhealthy_us
        FROM {db}.usage_by_month_exact AS u
        INNER JOIN (SELECT contract_id, tenant_id, toDate(term_start) AS first_day,
                           toDate(term_end) AS end_day
                    FROM {db}.contracts FINAL) AS c ON u.tenant_id = c.tenant_id
        WHERE u.month >= c.first_day AND addMonths(u.month, 1) <= c.end_day
        UNION ALL
        SELECT c.contract_id AS contract_id, toStartOfMonth(u.day) AS month,
               u.allocated_us * if(position(u.sku, '-MIG-') > 0,
                                   least(toUInt64OrZero(extract(u.sku, '-MIG-([0-9]+)g')), 7),
                                   7) AS sevenths_us,
               if(position(u.sku, '-MIG-') > 0, u.allocated_us, 0) AS slice_us,
               u.unhealthy_us AS p_unhealthy_us
        FROM (
            SELECT tenant_id, sku, cluster, day,
                   sum(p_allocated_us) AS allocated_us, sum(p_unhealthy_us) AS unhealthy_us
            FROM (
                SELECT tenant_id, sku, cluster, day, source_partition,
                       argMax(allocated_us, version) AS p_allocated_us,
                       argMax(unhealthy_us, version) AS p_unhealthy_us
                FROM {db}.usage_day_partials
                WHERE toStartOfMonth(day) IN (
                    SELECT arrayJoin([toStartOfMonth(toDate(term_start)),
                                      toStartOfMonth(toDate(term_end))])
                    FROM {db}.contracts)
                GROUP BY tenant_id, sku, cluster, day, source_partition
                UNION ALL
                SELECT tenant_id, sku, cluster, day, source_partition,
                       any(allocated_us) AS p_allocated_us, any(unhealthy_us) AS p_unhealthy_us
                FROM {db}.usage_day_adjustments
                WHERE toStartOfMonth(day) IN (
                    SELECT arrayJoin([toStartOfMonth(toDate(term_start)),
                                      toStartOfMonth(toDate(term_end))])
                    FROM {db}.contracts)
                GROUP BY tenant_id, sku, cluster, day, source_partition, source_offset
            ) AS parts
            GROUP BY tenant_id, sku, cluster, day
        ) AS u
        INNER JOIN (SELECT contract_id, tenant_id, toDate(term_start) AS first_day,
                           toDate(term_end) AS end_day
                    FROM {db}.contracts FINAL) AS c ON u.tenant_id = c.tenant_id
        WHERE u.day >= c.first_day AND u.day < c.end_day
          AND NOT (toStartOfMonth(u.day) >= c.first_day
                   AND addMonths(toStartOfMonth(u.day), 1) <= c.end_day)
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
        FROM {db}.usage_by_month_exact
    ) AS per_cluster
    GROUP BY tenant_id, sku, month
) AS per_sku;
