-- What each issued statement rated, per month it rated: a fingerprint of that month's
-- usage (the tenant's month rollups) and of the contracts in force in it (billing/issue.py).
-- A later statement re-rates an earlier month to find adjustments only when its
-- fingerprint has changed since the month was last rated, so issuing does not grow with the
-- months issued before. Written before the statement row, like its lines.
CREATE TABLE IF NOT EXISTS rated_inputs (
    tenant_id String,
    for_period String,
    statement_id String,
    inputs_sha256 String,
    recorded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (tenant_id, for_period, statement_id);
