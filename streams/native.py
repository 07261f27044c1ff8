"""ClickHouse Native encoding of the ledger: its wire form on both paths.

Native is columnar: a block is the column count, the row count, then per column its name,
its type and all its values; an ``Array(T)`` column is each row's end offset (UInt64,
cumulative) followed by all rows' elements as a column of T. Blocks concatenate: one
request may carry the blocks of several partitions.

The ledger has one row per accepted report, its samples in parallel arrays
(warehouse/migrations/0007_ledger_by_report.sql). Every sample is still stored, but
ClickHouse sorts, merges and deduplicates 48 times fewer rows: about two thirds of the CPU
per sample of a row-per-sample ledger, at twice the insert rate (docs/PERFORMANCE.md).
Finance reads it one row per sample through the ``usage_ledger`` view.

The readable twin encodes here; the hot path encodes the same bytes in a compiled kernel
(``streams.hotpath.kernels.ledger_native``). Byte equality is part of the parity test.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# One value per report, then one array per report of one element per sample.
LEDGER_REPORT_COLUMNS = (
    ("node_id", "String"), ("boot_id", "String"), ("seq", "UInt64"), ("cluster", "String"),
    ("interval_start_us", "UInt64"), ("interval_end_us", "UInt64"),
    ("source_partition", "UInt32"), ("source_offset", "UInt64"),
)  # fmt: skip
LEDGER_SAMPLE_COLUMNS = (
    ("gpu_uuid", "String"), ("gpu_index", "UInt32"), ("sku", "String"),
    ("tenant_id", "String"), ("job_id", "String"), ("tick_start_us", "UInt64"),
    ("tick_end_us", "UInt64"), ("allocated_us", "UInt64"), ("busy_us", "UInt64"),
    ("unhealthy_us", "UInt64"), ("energy_mj", "UInt64"), ("memory_peak_bytes", "UInt64"),
    ("late", "UInt8"),
)  # fmt: skip
LEDGER_TABLE = "usage_ledger_reports"
LEDGER_COLUMNS = tuple(name for name, _ in (*LEDGER_REPORT_COLUMNS, *LEDGER_SAMPLE_COLUMNS))
LEDGER_TYPES = (
    *(t for _, t in LEDGER_REPORT_COLUMNS),
    *(f"Array({t})" for _, t in LEDGER_SAMPLE_COLUMNS),
)
_PACK = {"UInt64": "Q", "UInt32": "I", "UInt8": "B"}


def uleb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string_binary(raw: bytes) -> bytes:
    return uleb128(len(raw)) + raw


def column_header(name: str, type_name: str) -> bytes:
    return string_binary(name.encode()) + string_binary(type_name.encode())


def _values(type_name: str, values: Sequence[object]) -> list[bytes]:
    if type_name.startswith("Array("):
        element = type_name[len("Array(") : -1]
        ends, end = [], 0
        for value in values:
            end += len(value)  # type: ignore[arg-type]
            ends.append(end)
        flat = [item for value in values for item in value]  # type: ignore[attr-defined]
        return [struct.pack(f"<{len(ends)}Q", *ends), *_values(element, flat)]
    if type_name == "String":
        return [
            string_binary(v.encode() if isinstance(v, str) else bytes(v))  # type: ignore[arg-type]
            for v in values
        ]
    return [struct.pack(f"<{len(values)}{_PACK[type_name]}", *values)]


def encode_block(
    names: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[object]]
) -> bytes:
    """One Native block of ``rows``; b"" for no rows (nothing to insert). An ``Array(T)``
    column's value in a row is a sequence of T."""
    if not rows:
        return b""
    parts = [uleb128(len(names)), uleb128(len(rows))]
    for i, (name, type_name) in enumerate(zip(names, types, strict=True)):
        parts.append(column_header(name, type_name))
        parts.extend(_values(type_name, [row[i] for row in rows]))
    return b"".join(parts)
