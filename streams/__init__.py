"""The worker: usage reports in from Kafka, the ledger, rollups and rejections out to
ClickHouse, in the order of the data's path.

- ``intake``: whole Kafka fetches, record batches checked and parsed, message blocks;
- ``processing``: a partition's batch decided (the compiled hot path and its readable
  twin decide the same), with the partition's state; no Faust, no ClickHouse;
- ``output``: the ledger's Native blocks, every table's idempotent rows, states last;
- ``host``: the Faust app around them, settings, topics, metrics and progress.

``contract`` holds the types that travel between the stages; ``EXACTLY_ONCE.md`` says why
a replay after any crash writes exactly what the first attempt wrote.
"""
