"""ClickHouse Native encoding of the ledger: its wire form on both paths.

Native is columnar: a block is the column count, the row count, then per column its name,
its type and all its values; an ``Array(T)`` column is each row's end offset (UInt64,
cumulative) followed by all rows' elements as a column of T. Blocks concatenate: one
request may carry the blocks of several partitions.

The ledger has one row per accepted report (warehouse/migrations/0008_ledger_packed.sql).
Each report's distinct GPU holdings (GPU, index, SKU, tenant, job) and distinct ticks are
stored once, in order of first appearance, and each sample names its holding and tick by
position (1-based, as ClickHouse indexes arrays); its counters are stored as they came.
A report of 8 GPUs x 6 ticks thus carries each GPU's strings once instead of six times:
ClickHouse parses, compresses and merges less than half the bytes, and spends about
half the CPU per sample (docs/PERFORMANCE.md); ClickHouse limits the pipeline. Finance
reads one row per sample, with the report's fields spelled out, through the
``usage_ledger`` view.

The readable twin encodes here; the hot path encodes the same bytes in a compiled kernel
(``streams.hotpath.kernels.ledger_native``). Byte equality is part of the parity test.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

# One value per report.
LEDGER_REPORT_COLUMNS = (
    ("node_id", "String"), ("boot_id", "String"), ("seq", "UInt64"), ("cluster", "String"),
    ("interval_start_us", "UInt64"), ("interval_end_us", "UInt64"),
    ("source_partition", "UInt32"), ("source_offset", "UInt64"),
)  # fmt: skip
# Arrays of one element per distinct holding: (column, the sample field it holds).
LEDGER_HOLDING_COLUMNS = (
    ("gpu_uuids", "String", "gpu_uuid"), ("gpu_indexes", "UInt32", "gpu_index"),
    ("skus", "String", "sku"), ("tenant_ids", "String", "tenant_id"),
    ("job_ids", "String", "job_id"),
)  # fmt: skip
# Arrays of one element per distinct (tick_start_us, tick_end_us).
LEDGER_TICK_COLUMNS = (
    ("tick_starts_us", "UInt64", "tick_start_us"), ("tick_ends_us", "UInt64", "tick_end_us"),
)  # fmt: skip
# Arrays of one element per sample: its holding's and its tick's positions in the arrays
# above, its counters, and whether it fell in an already-closed window.
LEDGER_SAMPLE_COLUMNS = (
    ("gpu_at", "UInt32"), ("tick_at", "UInt32"), ("allocated_us", "UInt64"),
    ("busy_us", "UInt64"), ("unhealthy_us", "UInt64"), ("energy_mj", "UInt64"),
    ("memory_peak_bytes", "UInt64"), ("late", "UInt8"),
)  # fmt: skip
LEDGER_TABLE = "usage_ledger_packed"
_ARRAYS = (
    *((n, t) for n, t, _ in (*LEDGER_HOLDING_COLUMNS, *LEDGER_TICK_COLUMNS)),
    *LEDGER_SAMPLE_COLUMNS,
)
LEDGER_COLUMNS = tuple(name for name, _ in (*LEDGER_REPORT_COLUMNS, *_ARRAYS))
LEDGER_TYPES = (*(t for _, t in LEDGER_REPORT_COLUMNS), *(f"Array({t})" for _, t in _ARRAYS))
_PACK = {"UInt64": "Q", "UInt32": "I", "UInt8": "B"}


def packed_samples(samples: Sequence[Mapping[str, Any]], late: Sequence[int]) -> list[list[Any]]:
    """A report's array columns, in ``LEDGER_COLUMNS`` order, from its samples (report
    order) and their late flags: the readable form of what the hot path's kernel writes."""
    holdings: dict[tuple[Any, ...], int] = {}
    ticks: dict[tuple[Any, ...], int] = {}
    gpu_at, tick_at = [], []
    for s in samples:
        holding = tuple(s[field] for _, _, field in LEDGER_HOLDING_COLUMNS)
        tick = tuple(s[field] for _, _, field in LEDGER_TICK_COLUMNS)
        gpu_at.append(holdings.setdefault(holding, len(holdings) + 1))
        tick_at.append(ticks.setdefault(tick, len(ticks) + 1))
    counters = [[s[name] for s in samples] for name, _ in LEDGER_SAMPLE_COLUMNS[2:-1]]
    return [
        *(list(column) for column in zip(*holdings, strict=True)),
        *(list(column) for column in zip(*ticks, strict=True)),
        gpu_at,
        tick_at,
        *counters,
        list(late),
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
