-- Contracts as loaded by `meter contracts load`. Every load of a contracts file gets a new
-- load_id (larger than any before); a contract's current terms are the rows of its latest
-- load, so a rate removed from the file stops applying instead of lingering.
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id String,
    name String,
    load_id UInt64,
    loaded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(load_id)
ORDER BY tenant_id;

CREATE TABLE IF NOT EXISTS contracts (
    contract_id String,
    tenant_id String,
    currency String,
    term_start DateTime('UTC'),
    term_end DateTime('UTC'),
    committed_gpus UInt32,
    minimum_monthly_commitment Decimal(38, 9),
    energy_pass_through UInt8,
    energy_rate_per_kwh Decimal(38, 9),
    sla_credit_multiplier Decimal(38, 9),
    source_sha256 String,
    load_id UInt64,
    loaded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(load_id)
ORDER BY contract_id;

-- One row per (contract, SKU, rate period): the rate per allocated GPU-hour over
-- [effective_from, effective_to).
CREATE TABLE IF NOT EXISTS contract_rates (
    contract_id String,
    tenant_id String,
    sku String,
    effective_from DateTime('UTC'),
    effective_to DateTime('UTC'),
    rate_per_gpu_hour Decimal(38, 9),
    load_id UInt64
) ENGINE = ReplacingMergeTree(load_id)
ORDER BY (contract_id, sku, effective_from, load_id);

-- Issued statements: written once per (tenant, period) by `meter statements`, with the
-- canonical JSON the files are rendered from and its SHA-256.
CREATE TABLE IF NOT EXISTS statements (
    tenant_id String,
    period String,
    statement_id String,
    currency String,
    total Decimal(38, 9),
    digest_sha256 String,
    canonical_json String,
    issued_at DateTime('UTC')
) ENGINE = MergeTree()
ORDER BY (tenant_id, period);

-- The lines of issued statements. for_period = period for this period's charges, an
-- earlier period for a prior-period adjustment. quantity is in `unit` (gpu_us, energy_mj).
-- Lines are written before their statement row; a retried issue rewrites the same keys.
CREATE TABLE IF NOT EXISTS statement_lines (
    tenant_id String,
    period String,
    statement_id String,
    line_no UInt32,
    kind String,
    for_period String,
    contract_id String,
    sku String,
    cluster String,
    rate_from DateTime('UTC'),
    quantity Int64,
    unit String,
    rate Decimal(38, 9),
    amount Decimal(38, 9)
) ENGINE = ReplacingMergeTree()
ORDER BY (tenant_id, period, line_no);

CREATE VIEW IF NOT EXISTS tenants_current AS
SELECT tenant_id, name, loaded_at FROM {db}.tenants FINAL;

CREATE VIEW IF NOT EXISTS contracts_current AS
SELECT contract_id, tenant_id, currency, term_start, term_end, committed_gpus,
       minimum_monthly_commitment, energy_pass_through, energy_rate_per_kwh,
       sla_credit_multiplier, load_id, loaded_at
FROM {db}.contracts FINAL;

CREATE VIEW IF NOT EXISTS contract_rates_current AS
SELECT r.contract_id AS contract_id, r.tenant_id AS tenant_id, r.sku AS sku,
       r.effective_from AS effective_from, r.effective_to AS effective_to,
       r.rate_per_gpu_hour AS rate_per_gpu_hour
FROM {db}.contract_rates AS r
INNER JOIN (SELECT contract_id, load_id FROM {db}.contracts FINAL) AS c
    ON r.contract_id = c.contract_id AND r.load_id = c.load_id;

-- GPU-hours are shown as Decimal (9 places, truncated); the µs columns are the exact figures.
-- Sums are taken over renamed inner columns (m_*): 18.16 would resolve the outer aliases.
CREATE VIEW IF NOT EXISTS usage_by_day AS
SELECT tenant_id, sku, cluster, day, allocated_us,
       toDecimal128(allocated_us, 9) / 3600000000 AS allocated_gpu_hours,
       busy_us, unhealthy_us,
       toDecimal128(unhealthy_us, 9) / 3600000000 AS unhealthy_gpu_hours,
       energy_mj,
       toDecimal128(energy_mj, 9) / 3600000000 AS energy_kwh,
       sample_count
FROM (
    SELECT tenant_id, sku, cluster, toDate(window_start) AS day,
           sum(m_allocated_us) AS allocated_us, sum(m_busy_us) AS busy_us,
           sum(m_unhealthy_us) AS unhealthy_us, sum(m_energy_mj) AS energy_mj,
           sum(m_sample_count) AS sample_count
    FROM (
        SELECT tenant_id, sku, cluster, window_start, allocated_us AS m_allocated_us,
               busy_us AS m_busy_us, unhealthy_us AS m_unhealthy_us, energy_mj AS m_energy_mj,
               sample_count AS m_sample_count
        FROM {db}.usage_by_minute
    ) AS minutes
    GROUP BY tenant_id, sku, cluster, day
) AS days;

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
        FROM {db}.usage_by_day
    ) AS days
    GROUP BY tenant_id, sku, cluster, month
) AS months;

-- Per contract and calendar month of its term: allocated GPU time against the committed
-- capacity (committed GPUs × the seconds of the month inside the term).
CREATE VIEW IF NOT EXISTS contract_position_by_month AS
SELECT m.contract_id AS contract_id, m.tenant_id AS tenant_id, m.month AS month,
       m.committed_gpus AS committed_gpus,
       m.committed_gpu_us AS committed_gpu_us,
       u.used_us AS allocated_us,
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
    SELECT c.contract_id AS contract_id, toStartOfMonth(u.window_start) AS month,
           sum(u.allocated_us) AS used_us, sum(u.unhealthy_us) AS unhealthy_us
    FROM {db}.usage_by_minute AS u
    INNER JOIN (SELECT contract_id, tenant_id, term_start, term_end
                FROM {db}.contracts FINAL) AS c ON u.tenant_id = c.tenant_id
    WHERE u.window_start >= c.term_start AND u.window_start < c.term_end
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

CREATE VIEW IF NOT EXISTS issued_statements AS
SELECT tenant_id, period, statement_id, currency, total, digest_sha256, issued_at
FROM {db}.statements;

-- What issued statements charged or credited, per tenant, period of the usage and kind
-- (usage, energy, commitment_true_up, sla_credit); adjustments land on their for_period.
CREATE VIEW IF NOT EXISTS billed_by_period AS
SELECT tenant_id, for_period, kind, contract_id, sku,
       sum(quantity) AS quantity, any(unit) AS unit, sum(amount) AS amount
FROM {db}.statement_lines FINAL
WHERE (tenant_id, period) IN (SELECT tenant_id, period FROM {db}.statements)
GROUP BY tenant_id, for_period, kind, contract_id, sku;
