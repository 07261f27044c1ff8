-- Each input partition's whole processing state (compressed JSON, streams/processing/state.py),
-- stored every few seconds rather than with every batch: writing it costs far more than
-- processing a batch does (docs/PERFORMANCE.md, "Freshness"). partition_state keeps a row a
-- batch, for what pipeline_progress shows; its state column stays empty from this
-- migration on, and a worker resumes from the snapshot with the highest applied offset here
-- or, for a state stored before this migration, in partition_state.
CREATE TABLE IF NOT EXISTS partition_snapshots (
    topic String,
    partition UInt32,
    applied_offset Int64,
    state String,
    written_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(applied_offset)
ORDER BY (topic, partition);
