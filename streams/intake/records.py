"""Kafka record batches (message format v2) read straight from fetched bytes, compiled.

aiokafka turns every record into two Python objects (its record, then a
``ConsumerRecord``) on the event loop, and the worker made a third: at 6 kB per report
that was about a third of the worker's loop. Here one fetch response's records of a
partition become columns in one compiled call, on the processing thread, with every
length bounds-checked and every batch's CRC-32C verified, as aiokafka does by default.

Only plain batches are read here: magic 2, uncompressed, neither transactional nor
control. A fetch holding anything else is left to aiokafka's own path (see
``streams.intake.fetch``), so compressed or transactional topics are still read, just slower.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Byte positions in a v2 record batch header (KIP-98), all big-endian.
_BATCH_LENGTH = 8  # int32: bytes after this field
_MAGIC = 16
_CRC = 17  # uint32, CRC-32C of everything from the attributes to the batch's end
_ATTRIBUTES = 21  # int16
_LAST_OFFSET_DELTA = 23  # int32
_FIRST_TIMESTAMP = 27  # int64
_MAX_TIMESTAMP = 35  # int64
_RECORD_COUNT = 57  # int32
HEADER_BYTES = 61
_CODEC_MASK = 0x07
_LOG_APPEND_TIME = 0x08
_TRANSACTIONAL = 0x10
_CONTROL = 0x20

# What scan_batches says about a fetch's complete batches.
PLAIN = 0  # all plain: parse_records reads them
NOT_PLAIN = 1  # some batch is not: aiokafka's own path reads this fetch
# What parse_records returns when it cannot read a batch it was given.
CORRUPT = -1  # a length, a varint or the CRC does not add up
OVERFLOW = -2  # more records than the output columns hold


def _crc32c_tables() -> np.ndarray:
    """Slicing-by-8 tables for CRC-32C (Castagnoli, reflected polynomial 0x82F63B78)."""
    tables = np.zeros((8, 256), np.uint32)
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        tables[0, n] = crc
    for n in range(256):
        crc = int(tables[0, n])
        for k in range(1, 8):
            crc = (crc >> 8) ^ int(tables[0, crc & 0xFF])
            tables[k, n] = crc
    return tables


CRC32C_TABLES = _crc32c_tables()


@njit(cache=True, nogil=True)
def crc32c(buf: np.ndarray, start: int, end: int, t: np.ndarray) -> int:
    crc = np.uint32(0xFFFFFFFF)
    i = start
    while i + 8 <= end:
        lo = crc ^ (
            np.uint32(buf[i])
            | (np.uint32(buf[i + 1]) << 8)
            | (np.uint32(buf[i + 2]) << 16)
            | (np.uint32(buf[i + 3]) << 24)
        )
        crc = (
            t[7, lo & 0xFF]
            ^ t[6, (lo >> 8) & 0xFF]
            ^ t[5, (lo >> 16) & 0xFF]
            ^ t[4, lo >> 24]
            ^ t[3, buf[i + 4]]
            ^ t[2, buf[i + 5]]
            ^ t[1, buf[i + 6]]
            ^ t[0, buf[i + 7]]
        )
        i += 8
    while i < end:
        crc = t[0, (crc ^ buf[i]) & 0xFF] ^ (crc >> 8)
        i += 1
    return int(crc ^ np.uint32(0xFFFFFFFF))


@njit(cache=True, inline="always")
def _be(buf: np.ndarray, at: int, width: int) -> int:
    """A signed big-endian integer of ``width`` bytes; the caller checked the bounds."""
    value = np.int64(0)
    for i in range(width):
        value = (value << 8) | np.int64(buf[at + i])
    if width < 8 and value >= np.int64(1) << (8 * width - 1):
        value -= np.int64(1) << (8 * width)
    return value


@njit(cache=True, nogil=True)
def scan_batches(buf: np.ndarray) -> tuple[int, int, int, int]:
    """(verdict, end of the last complete batch, offset after it, records in them).

    A fetch may end inside a batch (the broker cuts at the size asked for): that batch is
    not counted, and aiokafka fetches it again from the offset returned here.
    """
    at, n = 0, len(buf)
    verdict, next_offset, records = PLAIN, np.int64(-1), np.int64(0)
    while at + HEADER_BYTES <= n:
        size = _be(buf, at + _BATCH_LENGTH, 4)
        end = at + 12 + size
        if size < HEADER_BYTES - 12 or end > n:
            break
        attributes = _be(buf, at + _ATTRIBUTES, 2)
        if buf[at + _MAGIC] != 2 or attributes & (_CODEC_MASK | _TRANSACTIONAL | _CONTROL):
            verdict = NOT_PLAIN
        next_offset = _be(buf, at, 8) + _be(buf, at + _LAST_OFFSET_DELTA, 4) + 1
        records += _be(buf, at + _RECORD_COUNT, 4)
        at = end
    return verdict, at, next_offset, records


@njit(cache=True, inline="always")
def _varint(buf: np.ndarray, at: int, end: int) -> tuple[int, int]:
    """A zigzag varint (at most 10 bytes) at ``at``; (value, next position), or (0, -1)."""
    shift, raw = 0, np.uint64(0)
    while at < end and shift < 70:
        byte = buf[at]
        at += 1
        raw |= np.uint64(byte & 0x7F) << np.uint64(shift)
        if byte < 0x80:
            return np.int64(raw >> np.uint64(1)) ^ -np.int64(raw & np.uint64(1)), at
        shift += 7
    return 0, -1


@njit(cache=True, nogil=True)
def parse_records(
    buf: np.ndarray,
    end: int,
    fetch_offset: int,
    tables: np.ndarray,
    out: np.ndarray,
    out_at: int,
    first: int,
    offset: np.ndarray,
    timestamp_ms: np.ndarray,
    key_at: np.ndarray,
    key_len: np.ndarray,
    value_at: np.ndarray,
    value_len: np.ndarray,
) -> tuple[int, int]:
    """Reads the plain batches in ``buf[:end]`` into rows ``first``... of the columns,
    copying keys and values into ``out`` from ``out_at``. Records below ``fetch_offset``
    (a batch starting before it) are skipped. A null key or value has length -1.

    Returns (rows written, next free position in ``out``), or (CORRUPT or OVERFLOW, 0).
    """
    row, at = first, 0
    if end > len(buf):
        return CORRUPT, 0
    while at < end:
        # Lengths are checked here too, not only in scan_batches: nothing is read past
        # ``end`` whoever made the RawFetch.
        if at + HEADER_BYTES > end:
            return CORRUPT, 0
        size = _be(buf, at + _BATCH_LENGTH, 4)
        batch_end = at + 12 + size
        if size < HEADER_BYTES - 12 or batch_end > end:
            return CORRUPT, 0
        if crc32c(buf, at + _ATTRIBUTES, batch_end, tables) != (
            _be(buf, at + _CRC, 4) & 0xFFFFFFFF
        ):
            return CORRUPT, 0
        base_offset = _be(buf, at, 8)
        log_append = _be(buf, at + _ATTRIBUTES, 2) & _LOG_APPEND_TIME
        first_ts = _be(buf, at + (_MAX_TIMESTAMP if log_append else _FIRST_TIMESTAMP), 8)
        count = _be(buf, at + _RECORD_COUNT, 4)
        p = at + HEADER_BYTES
        for _ in range(count):
            size, p = _varint(buf, p, batch_end)
            if p < 0 or size < 0 or p + size > batch_end:
                return CORRUPT, 0
            record_end = p + size
            p += 1  # the record's attributes: unused in v2
            ts_delta, p = _varint(buf, p, record_end)
            if p < 0:
                return CORRUPT, 0
            offset_delta, p = _varint(buf, p, record_end)
            if p < 0:
                return CORRUPT, 0
            klen, p = _varint(buf, p, record_end)
            if p < 0 or klen < -1 or p + max(klen, 0) > record_end:
                return CORRUPT, 0
            kat = p
            p += max(klen, 0)
            vlen, p = _varint(buf, p, record_end)
            if p < 0 or vlen < -1 or p + max(vlen, 0) > record_end:
                return CORRUPT, 0
            vat = p
            p += max(vlen, 0)
            headers, p = _varint(buf, p, record_end)
            if p < 0 or headers < 0:
                return CORRUPT, 0
            for _ in range(headers):  # read past them: reports carry none we use
                hlen, p = _varint(buf, p, record_end)
                if p < 0 or hlen < 0 or p + hlen > record_end:
                    return CORRUPT, 0
                p += hlen
                hlen, p = _varint(buf, p, record_end)
                if p < 0 or hlen < -1 or p + max(hlen, 0) > record_end:
                    return CORRUPT, 0
                p += max(hlen, 0)
            if p != record_end:
                return CORRUPT, 0
            record_offset = base_offset + offset_delta
            if record_offset < fetch_offset:
                continue
            if row >= len(offset):
                return OVERFLOW, 0
            offset[row] = record_offset
            timestamp_ms[row] = first_ts if log_append else first_ts + ts_delta
            key_len[row], value_len[row] = klen, vlen
            key_at[row] = out_at
            out[out_at : out_at + max(klen, 0)] = buf[kat : kat + max(klen, 0)]
            out_at += max(klen, 0)
            value_at[row] = out_at
            out[out_at : out_at + max(vlen, 0)] = buf[vat : vat + max(vlen, 0)]
            out_at += max(vlen, 0)
            row += 1
        if p != batch_end:
            return CORRUPT, 0
        at = batch_end
    return row - first, out_at
