-- Every message the pipeline would not meter, with a machine-readable reason. Keyed by
-- where it sat in the log, so a replayed batch rewrites the same rows. The raw payload is
-- kept (String holds arbitrary bytes) so a rejected report can be examined or re-driven.
CREATE TABLE IF NOT EXISTS rejected_reports (
    source_topic String,
    source_partition UInt32,
    source_offset UInt64,
    reason String,
    detail String,
    node_id String,
    boot_id String,
    seq Int64,
    payload_size UInt32,
    payload_sha256 String,
    payload String,
    rejected_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (source_topic, source_partition, source_offset);
