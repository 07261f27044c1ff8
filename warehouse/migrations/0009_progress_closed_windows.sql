-- Statements wait until the pipeline has closed every window of their month
-- (billing/issue.py): each partition's state row now says before when its windows are
-- closed (event time less the lateness bound). Rows written before this migration read 0
-- until their worker writes again. The ADD COLUMN is skipped on a rerun when the column
-- exists (warehouse/migrate.py); every other statement can run again.
ALTER TABLE partition_state ADD COLUMN closed_before_us UInt64 DEFAULT 0;

DROP TABLE IF EXISTS pipeline_progress;

CREATE VIEW IF NOT EXISTS pipeline_progress AS
SELECT topic, partition, applied_offset, accepted_reports, accepted_samples,
       duplicate_reports, late_reports, rejected_reports, open_gaps,
       toDateTime(intDiv(closed_before_us, 1000000), 'UTC') AS windows_closed_before,
       written_at
FROM {db}.partition_state FINAL;
