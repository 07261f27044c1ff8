"""Machine-readable rejection reasons: the values of the dead-letter ``reason`` header and of
``rejected_reports.reason``. They are part of the operator and finance contract: add new
codes freely, never rename or reuse one.
"""

from __future__ import annotations

# Framing and decoding (the bytes are not a usage report we can read).
EMPTY_MESSAGE = "empty_message"
BAD_MAGIC = "bad_magic"
UNKNOWN_SCHEMA = "unknown_schema"
UNDECODABLE = "undecodable"
TRAILING_BYTES = "trailing_bytes"

# Validation (a readable report that breaks the contract).
INVALID_IDENTITY = "invalid_identity"
END_BEFORE_START = "end_before_start"
EMPTY_TICK_WITH_USAGE = "empty_tick_with_usage"  # a zero-length tick with non-zero counters
FUTURE_TIMESTAMP = "future_timestamp"
TICK_OUTSIDE_INTERVAL = "tick_outside_interval"
NEGATIVE_COUNTER = "negative_counter"
COUNTER_EXCEEDS_TICK = "counter_exceeds_tick"
COUNTER_OUT_OF_RANGE = "counter_out_of_range"
UNKNOWN_SKU = "unknown_sku"
INVALID_TENANT = "invalid_tenant"
DUPLICATE_SAMPLE = "duplicate_sample"
TOO_MANY_SAMPLES = "too_many_samples"
# Ticks of one GPU that overlap each other in a report, or time already metered for that GPU
# in the partition (streams/processing/gputime.py): no GPU-µs is billed twice.
OVERLAPPING_TIME = "overlapping_time"

# Ordering (a valid report the worker can no longer fold into an open window).
LATE_BEYOND_BOUND = "late_beyond_bound"

ALL = frozenset(
    value for name, value in dict(globals()).items() if name.isupper() and isinstance(value, str)
)
