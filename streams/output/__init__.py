"""ClickHouse out: the ledger's Native blocks, every table's idempotent rows, the partition
states last, and the dead letters."""
