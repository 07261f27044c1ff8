"""ClickHouse RowBinary encoding of ledger rows: the ledger's wire form on both paths.

The readable twin encodes here with ``struct``; the hot path encodes the same bytes in a
compiled kernel. Byte equality of the two is part of the parity test.
"""

from __future__ import annotations

import struct

# Ledger column types in LEDGER_COLUMNS order: S = String, Q = UInt64, I = UInt32, B = UInt8.
LEDGER_TYPES = "SSQSQQISSSSQQQQQIQB"


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


def encode_row(types: str, values: tuple[object, ...]) -> bytes:
    parts = []
    for kind, value in zip(types, values, strict=True):
        if kind == "S":
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)  # type: ignore[arg-type]
            parts.append(uleb128(len(raw)) + raw)
        else:
            parts.append(struct.pack("<" + kind, value))
    return b"".join(parts)
