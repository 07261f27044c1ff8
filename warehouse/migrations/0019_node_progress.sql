-- Where each node stands (streams/processing/nodeprogress.py): its latest seq, open gaps and when its
-- reports last arrived, per (node, boot, source partition), written by the worker beside
-- every batch for the nodes the batch moved. Version: the partition's applied offset, so
-- a replayed batch rewrites the same rows.
CREATE TABLE IF NOT EXISTS node_progress (
    node_id String,
    boot_id String,
    source_partition UInt32,
    last_seq Int64,
    open_gaps UInt32,
    last_seen_at DateTime('UTC'),
    version UInt64,
    written_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
ORDER BY (node_id, boot_id, source_partition);

-- One row per node: its latest boot, when it was last heard from, its latest seq and its
-- open gaps (all boots). An operator sorts by last_seen_at to find the silent nodes.
CREATE VIEW IF NOT EXISTS node_status AS
SELECT node_id,
       argMax(b_boot_id, b_last_seen_at) AS boot_id,
       max(b_last_seen_at) AS last_seen_at,
       argMax(b_last_seq, b_last_seen_at) AS last_seq,
       sum(b_open_gaps) AS open_gaps,
       count() AS boots
FROM (
    SELECT node_id, boot_id AS b_boot_id,
           argMax(last_seen_at, version) AS b_last_seen_at,
           argMax(last_seq, version) AS b_last_seq,
           argMax(open_gaps, version) AS b_open_gaps
    FROM {db}.node_progress
    GROUP BY node_id, boot_id
) AS per_boot
GROUP BY node_id;
