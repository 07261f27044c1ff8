-- Audited corrections of metered usage (billing/corrections.py): finance voids usage or
-- re-attributes it to another tenant without touching the ledger or the rollups. A
-- correction is an append-only record; the usage it moves is computed once, from the
-- ledger, when it is added, and kept as signed deltas per (tenant, SKU, cluster, minute):
-- a re-attribution is the source's usage negated plus the same usage for the target, so
-- it sums to zero. Deltas are written first and count once their correction's row exists
-- (the mark of a correction), so an interrupted add leaves nothing applied.
CREATE TABLE IF NOT EXISTS corrections (
    correction_id String,
    kind String,
    tenant_id String,
    to_tenant_id String,
    node_id String,
    gpu_uuid String,
    start_at DateTime('UTC'),
    end_at DateTime('UTC'),
    author String,
    reason String,
    ticket String,
    samples UInt64,
    allocated_us UInt64,
    recorded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY correction_id;

CREATE TABLE IF NOT EXISTS usage_correction_deltas (
    correction_id String,
    tenant_id String,
    sku String,
    cluster String,
    window_start DateTime('UTC'),
    allocated_us Int64,
    busy_us Int64,
    unhealthy_us Int64,
    energy_mj Int64,
    sample_count Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, window_start, sku, cluster, correction_id);

-- The deltas of recorded corrections per correction, tenant, SKU, cluster and day (FINAL:
-- an add that was retried wrote its rows twice; the table is small).
CREATE VIEW IF NOT EXISTS usage_corrections AS
SELECT correction_id, tenant_id, sku, cluster, toDate(window_start) AS day,
       sum(allocated_us) AS allocated_us, sum(busy_us) AS busy_us,
       sum(unhealthy_us) AS unhealthy_us, sum(energy_mj) AS energy_mj,
       sum(sample_count) AS sample_count
FROM {db}.usage_correction_deltas FINAL
WHERE correction_id IN (SELECT correction_id FROM {db}.corrections)
GROUP BY correction_id, tenant_id, sku, cluster, day;

-- Metered, corrected and billable usage side by side, per tenant, SKU, cluster and month:
-- what statements bill is the metered usage plus the corrections.
CREATE VIEW IF NOT EXISTS billable_usage_by_month AS
SELECT tenant_id, sku, cluster, month,
       sum(m_allocated_us) AS metered_allocated_us,
       sum(c_allocated_us) AS correction_allocated_us,
       sum(m_allocated_us) + sum(c_allocated_us) AS allocated_us,
       toDecimal128(sum(m_allocated_us) + sum(c_allocated_us), 9) / 3600000000
           AS allocated_gpu_hours,
       sum(m_unhealthy_us) + sum(c_unhealthy_us) AS unhealthy_us,
       sum(m_energy_mj) + sum(c_energy_mj) AS energy_mj
FROM (
    SELECT tenant_id, sku, cluster, month,
           toInt64(allocated_us) AS m_allocated_us, toInt64(0) AS c_allocated_us,
           toInt64(unhealthy_us) AS m_unhealthy_us, toInt64(0) AS c_unhealthy_us,
           toInt64(energy_mj) AS m_energy_mj, toInt64(0) AS c_energy_mj
    FROM {db}.usage_by_month_exact
    UNION ALL
    SELECT tenant_id, sku, cluster, toStartOfMonth(day) AS month,
           toInt64(0) AS m_allocated_us, allocated_us AS c_allocated_us,
           toInt64(0) AS m_unhealthy_us, unhealthy_us AS c_unhealthy_us,
           toInt64(0) AS m_energy_mj, energy_mj AS c_energy_mj
    FROM {db}.usage_corrections
) AS sides
GROUP BY tenant_id, sku, cluster, month;

-- A statement records, per month it rated, which corrections it billed: a correction added
-- later is billed as its own labelled adjustment (billing/issue.py).
ALTER TABLE rated_inputs ADD COLUMN correction_ids Array(String);

-- The commitment position counts corrected usage: the corrections of each month of the
-- term are added to what was metered. The day rollups are read only for the months a term
-- starts or ends inside (a term starting on the 1st reads none).
DROP TABLE IF EXISTS contract_position_by_month;

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
    SELECT contract_id, month,
           toUInt64(greatest(intDiv(sum(sevenths_us), 7), 0)) AS used_us,
           toUInt64(greatest(sum(slice_us), 0)) AS mig_us,
           toUInt64(greatest(sum(p_unhealthy_us), 0)) AS unhealthy_us
    FROM (
        SELECT c.contract_id AS contract_id, u.month AS month,
               toInt64(u.allocated_us) * if(position(u.sku, '-MIG-') > 0,
                   least(toInt64(toUInt64OrZero(extract(u.sku, '-MIG-([0-9]+)g'))), 7),
                   7) AS sevenths_us,
               toInt64(if(position(u.sku, '-MIG-') > 0, u.allocated_us, 0)) AS slice_us,
               toInt64(u.unhealthy_us) AS p_unhealthy_us
        FROM {db}.usage_by_month_exact AS u
        INNER JOIN (SELECT contract_id, tenant_id, toDate(term_start) AS first_day,
                           toDate(term_end) AS end_day
                    FROM {db}.contracts FINAL) AS c ON u.tenant_id = c.tenant_id
        WHERE u.month >= c.first_day AND addMonths(u.month, 1) <= c.end_day
        UNION ALL
        SELECT c.contract_id AS contract_id, toStartOfMonth(u.day) AS month,
               toInt64(u.allocated_us) * if(position(u.sku, '-MIG-') > 0,
                   least(toInt64(toUInt64OrZero(extract(u.sku, '-MIG-([0-9]+)g'))), 7),
                   7) AS sevenths_us,
               toInt64(if(position(u.sku, '-MIG-') > 0, u.allocated_us, 0)) AS slice_us,
               toInt64(u.unhealthy_us) AS p_unhealthy_us
        FROM (
            SELECT tenant_id, sku, cluster, day,
                   sum(p_allocated_us) AS allocated_us, sum(p_unhealthy_us) AS unhealthy_us
            FROM (
                SELECT tenant_id, sku, cluster, day, source_partition,
                       argMax(allocated_us, version) AS p_allocated_us,
                       argMax(unhealthy_us, version) AS p_unhealthy_us
                FROM {db}.usage_day_partials
                WHERE toStartOfMonth(day) IN (
                    SELECT arrayJoin([
                        if(toDayOfMonth(toDate(term_start)) = 1, toDate(0),
                           toStartOfMonth(toDate(term_start))),
                        if(toDayOfMonth(toDate(term_end)) = 1, toDate(0),
                           toStartOfMonth(toDate(term_end)))])
                    FROM {db}.contracts)
                GROUP BY tenant_id, sku, cluster, day, source_partition
                UNION ALL
                SELECT tenant_id, sku, cluster, day, source_partition,
                       any(allocated_us) AS p_allocated_us, any(unhealthy_us) AS p_unhealthy_us
                FROM {db}.usage_day_adjustments
                WHERE toStartOfMonth(day) IN (
                    SELECT arrayJoin([
                        if(toDayOfMonth(toDate(term_start)) = 1, toDate(0),
                           toStartOfMonth(toDate(term_start))),
                        if(toDayOfMonth(toDate(term_end)) = 1, toDate(0),
                           toStartOfMonth(toDate(term_end)))])
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
        UNION ALL
        SELECT c.contract_id AS contract_id, toStartOfMonth(d.day) AS month,
               d.allocated_us * if(position(d.sku, '-MIG-') > 0,
                   least(toInt64(toUInt64OrZero(extract(d.sku, '-MIG-([0-9]+)g'))), 7),
                   7) AS sevenths_us,
               if(position(d.sku, '-MIG-') > 0, d.allocated_us, toInt64(0)) AS slice_us,
               d.unhealthy_us AS p_unhealthy_us
        FROM {db}.usage_corrections AS d
        INNER JOIN (SELECT contract_id, tenant_id, toDate(term_start) AS first_day,
                           toDate(term_end) AS end_day
                    FROM {db}.contracts FINAL) AS c ON d.tenant_id = c.tenant_id
        WHERE d.day >= c.first_day AND d.day < c.end_day
    ) AS weighted
    GROUP BY contract_id, month
) AS u ON m.contract_id = u.contract_id AND m.month = u.month;

