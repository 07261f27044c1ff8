-- Towards committed GPUs a MIG instance counts as its fraction of its parent GPU: an
-- "<N>g" profile is N/7 of the GPU (streams/processing/validate.py, billing/README.md). allocated_us
-- is now whole-GPU-equivalent time (rounded down to the µs); mig_slice_us is the slices'
-- time as metered, shown apart. Every statement here can run again.
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
    SELECT contract_id, month, intDiv(sum(sevenths_us), 7) AS used_us, sum(slice_us) AS mig_us,
           sum(p_unhealthy_us) AS unhealthy_us
    FROM (
        SELECT c.contract_id AS contract_id, toStartOfMonth(u.window_start) AS month,
               u.allocated_us * if(position(u.sku, '-MIG-') > 0,
                                   least(toUInt64OrZero(extract(u.sku, '-MIG-([0-9]+)g')), 7),
                                   7) AS sevenths_us,
               if(position(u.sku, '-MIG-') > 0, u.allocated_us, 0) AS slice_us,
               u.unhealthy_us AS p_unhealthy_us
        FROM {db}.usage_by_minute AS u
        INNER JOIN (SELECT contract_id, tenant_id, term_start, term_end
                    FROM {db}.contracts FINAL) AS c ON u.tenant_id = c.tenant_id
        WHERE u.window_start >= c.term_start AND u.window_start < c.term_end
    ) AS weighted
    GROUP BY contract_id, month
) AS u ON m.contract_id = u.contract_id AND m.month = u.month;
