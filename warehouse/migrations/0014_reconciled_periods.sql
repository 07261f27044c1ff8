-- What `meter reconcile` found equal, and over which data: a period whose check (a) passed
-- is not compared again while every table part it read is the same (parts are immutable:
-- an insert, a merge or a mutation makes new ones). `fingerprint` is the SHA-256 of those
-- parts' names, rows, sizes and times (warehouse/verified.py). Reconcile as a read-only
-- user reads this table and compares in full; only a writer records.
CREATE TABLE IF NOT EXISTS reconciled_periods (
    period String,
    fingerprint String,
    ledger_keys UInt64,
    grain_keys UInt64,
    seconds Float64,
    verified_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(verified_at)
ORDER BY (period, fingerprint);
