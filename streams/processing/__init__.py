"""A partition's batch processed: validation, seq tracking, metered GPU time, windows at
every grain, the partition's state; the compiled hot path and its readable twin, which
decide the same (``streams/EXACTLY_ONCE.md``)."""
