-- Finance-facing usage: the rollup partials summed per window. Integers in the smallest
-- unit (GPU-µs, mJ); a GPU-hour is 3,600,000,000 GPU-µs, a kWh 3,600,000,000 mJ.
CREATE VIEW IF NOT EXISTS usage_by_minute AS
SELECT
    tenant_id,
    sku,
    cluster,
    window_start,
    sum(allocated_us) AS allocated_us,
    sum(busy_us) AS busy_us,
    sum(unhealthy_us) AS unhealthy_us,
    sum(energy_mj) AS energy_mj,
    sum(sample_count) AS sample_count
FROM {db}.usage_rollup_partials FINAL
GROUP BY tenant_id, sku, cluster, window_start;

CREATE VIEW IF NOT EXISTS usage_by_hour AS
SELECT
    tenant_id,
    sku,
    cluster,
    toStartOfHour(window_start) AS hour_start,
    sum(allocated_us) AS allocated_us,
    sum(busy_us) AS busy_us,
    sum(unhealthy_us) AS unhealthy_us,
    sum(energy_mj) AS energy_mj,
    sum(sample_count) AS sample_count
FROM {db}.usage_by_minute
GROUP BY tenant_id, sku, cluster, hour_start;

CREATE VIEW IF NOT EXISTS rejected_by_reason AS
SELECT
    reason,
    count() AS reports,
    min(rejected_at) AS first_rejected_at,
    max(rejected_at) AS last_rejected_at
FROM {db}.rejected_reports FINAL
GROUP BY reason;
