"""ClickHouse Native encoding of the ledger: its wire form on both paths.

Native is columnar: a block is the column count, the row count, then per column its name,
its type and all its values; an ``Array(T)`` column is each row's end offset (UInt64,
cumulative) followed by all rows' elements as a column of T. Blocks concatenate: one
request may carry the blocks of several partitions.

The ledger has one row per accepted report and GPU holding (a distinct GPU, index, SKU,
tenant and job of the report; warehouse/migrations/0013_ledger_by_holding.sql): the
report's fields and the holding's once, as plain columns, and the holding's samples'
ticks and counters as arrays, in report order. Holdings are in order of first
appearance. Finance reads one row per sample through the ``usage_ledger`` view, which
spells a row's arrays out with one ARRAY JOIN: a sample costs the same whatever the size of
its report, and the tenant, SKU and report start are columns the table is sorted by.

The readable twin encodes here; the hot path encodes the same bytes in a compiled kernel
(``streams.processing.hotpath.ledger.ledger_native``). Byte equality is part of the parity test.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

# One value per row: the report's fields, then the holding's.
LEDGER_REPORT_COLUMNS = (
    ("node_id", "String"),
    ("boot_id", "String"),
    ("seq", "UInt64"),
    ("cluster", "String"),
    ("interval_start_us", "UInt64"),
    ("interval_end_us", "UInt64"),
    ("source_partition", "UInt32"),
    ("source_offset", "UInt64"),
)
LEDGER_HOLDING_COLUMNS = (
    ("gpu_uuid", "String"),
    ("gpu_index", "UInt32"),
    ("sku", "String"),
    ("tenant_id", "String"),
    ("job_id", "String"),
)
# Arrays of one element per sample of the holding: its tick, its counters, and whether it
# fell in an already-closed window.
LEDGER_SAMPLE_COLUMNS = (
    ("tick_start_us", "UInt64"),
    ("tick_end_us", "UInt64"),
    ("allocated_us", "UInt64"),
    ("busy_us", "UInt64"),
    ("unhealthy_us", "UInt64"),
    ("energy_mj", "UInt64"),
    ("memory_peak_bytes", "UInt64"),
    ("late", "UInt8"),
)
LEDGER_TABLE = "usage_ledger_holdings"
_SCALARS = (*LEDGER_REPORT_COLUMNS, *LEDGER_HOLDING_COLUMNS)
LEDGER_COLUMNS = tuple(name for name, _ in (*_SCALARS, *LEDGER_SAMPLE_COLUMNS))
LEDGER_TYPES = (
    *(t for _, t in _SCALARS),
    *(f"Array({t})" for _, t in LEDGER_SAMPLE_COLUMNS),
)
_PACK = {"UInt64": "Q", "UInt32": "I", "UInt8": "B"}


def holding_rows(
    report: Sequence[Any], samples: Sequence[Mapping[str, Any]], late: Sequence[int]
) -> list[tuple[Any, ...]]:
    """A report's ledger rows, in ``LEDGER_COLUMNS`` order, from its fields (in
    ``LEDGER_REPORT_COLUMNS`` order), its samples (report order) and their late flags: the
    readable form of what the hot path's kernel writes."""
    holdings: dict[tuple[Any, ...], list[int]] = {}
    for i, s in enumerate(samples):
        holdings.setdefault(tuple(s[name] for name, _ in LEDGER_HOLDING_COLUMNS), []).append(i)
    counters = [name for name, _ in LEDGER_SAMPLE_COLUMNS[:-1]]
    return [
        (
            *report,
            *holding,
            *([samples[i][name] for i in at] for name in counters),
            [late[i] for i in at],
        )
        for holding, at in holdings.items()
    ]


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
