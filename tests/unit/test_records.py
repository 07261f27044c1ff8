"""Fetched record batches read in compiled code (streams.intake.records,
streams.intake.block) against aiokafka's own reader, on batches built by aiokafka's own
writer."""

from __future__ import annotations

import random

import numpy as np
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c

from streams.errors import CorruptFetchError
from streams.intake.block import MessageBlock, next_offset
from streams.intake.fetch import RawFetch
from streams.intake.records import CRC32C_TABLES, NOT_PLAIN, PLAIN, crc32c, scan_batches

US_PER_MS = 1000


def _batch(
    base_offset: int,
    records: list,
    *,
    compression: int = 0,
    log_append: bool = False,
    transactional: bool = False,
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=transactional,
        producer_id=7 if transactional else -1,
        producer_epoch=0 if transactional else -1,
        base_sequence=0 if transactional else -1,
        batch_size=1 << 30,
    )
    for delta, (ts, key, value, headers) in enumerate(records):
        assert builder.append(delta, timestamp=ts, key=key, value=value, headers=headers)
    data = bytearray(builder.build())
    data[0:8] = base_offset.to_bytes(8, "big")
    if log_append:  # the broker stamps LogAppendTime: set the bit, then the CRC again
        data[22] |= 0x08
        data[17:21] = calc_crc32c(bytes(data[21:])).to_bytes(4, "big")
    return bytes(data)


def _random_records(rng: random.Random, n: int) -> list:
    def blob(max_len: int) -> bytes | None:
        return None if rng.random() < 0.1 else rng.randbytes(rng.randrange(max_len))

    return [
        (
            1_700_000_000_000 + rng.randrange(-5_000, 5_000),
            blob(40),
            blob(9_000),
            [("h", blob(10))] if rng.random() < 0.2 else [],
        )
        for _ in range(n)
    ]


def _expected(data: bytes, fetch_offset: int) -> list[tuple]:
    """What aiokafka reads from the same bytes: (offset, timestamp ms, key, value), with
    a null value as b"" (how a block hands it out)."""
    out, records = [], MemoryRecords(data)
    while records.has_next():
        for r in records.next_batch():
            if r.offset >= fetch_offset:
                out.append((r.offset, r.timestamp, r.key, r.value or b""))
    return out


def _nulls(data: bytes, fetch_offset: int) -> list[bool]:
    out, records = [], MemoryRecords(data)
    while records.has_next():
        out.extend(r.value is None for r in records.next_batch() if r.offset >= fetch_offset)
    return out


def _fetch(data: bytes, fetch_offset: int) -> RawFetch:
    verdict, end, next_off, count = scan_batches(np.frombuffer(data, np.uint8))
    assert verdict == PLAIN
    return RawFetch(data, end, fetch_offset, next_off, count)


def _rows(block: MessageBlock) -> list[tuple]:
    return [(m.offset, m.timestamp_us // US_PER_MS, m.key, m.value) for m in block]


def test_crc32c_matches_aiokafka_on_every_length_around_the_8_byte_stride():
    rng = random.Random(1)
    for n in range(0, 40):
        data = rng.randbytes(n)
        buf = np.frombuffer(data, np.uint8)
        assert crc32c(buf, 0, n, CRC32C_TABLES) == calc_crc32c(data)


@pytest.mark.parametrize("seed", range(6))
def test_random_batches_read_exactly_as_aiokafka_reads_them(seed):
    rng = random.Random(seed)
    data, offset = b"", 1000 * seed
    for _ in range(rng.randrange(1, 5)):
        records = _random_records(rng, rng.randrange(1, 30))
        data += _batch(offset, records, log_append=rng.random() < 0.3)
        offset += len(records)
    # The broker cuts a fetch at the size asked for: a partial batch may follow.
    tail = _batch(offset, _random_records(rng, 3))
    data += tail[: rng.randrange(0, len(tail))]
    fetch_offset = 1000 * seed + rng.randrange(0, 3)  # inside the first batch
    fetch = _fetch(data, fetch_offset)
    assert fetch.next_offset == offset
    block = MessageBlock.fetched("usage", 3, [fetch])
    assert _rows(block) == _expected(data[: fetch.end], fetch_offset)
    null_values = [i for i, r in enumerate(_nulls(data[: fetch.end], fetch_offset)) if r]
    assert np.flatnonzero(block.value_len < 0).tolist() == null_values
    assert next_offset([fetch]) == offset


def test_null_values_become_empty_and_null_keys_stay_none():
    data = _batch(0, [(5, None, None, []), (6, b"k", b"", [])])
    (first, second) = MessageBlock.fetched("usage", 0, [_fetch(data, 0)])
    assert (first.key, first.value) == (None, b"")
    assert (second.key, second.value) == (b"k", b"")


def test_raw_fetches_and_aiokafkas_records_mix_in_offset_order():
    class Record:
        def __init__(self, offset: int) -> None:
            self.offset, self.timestamp, self.key, self.value = offset, 9, b"k", b"v%d" % offset

    first = _fetch(_batch(0, [(1, b"a", b"x", []), (2, b"b", b"y", [])]), 0)
    block = MessageBlock.fetched("usage", 0, [first, Record(2), Record(3)])
    assert [(m.offset, m.value) for m in block] == [(0, b"x"), (1, b"y"), (2, b"v2"), (3, b"v3")]
    assert [m.timestamp_us for m in block] == [1000, 2000, 9000, 9000]
    assert [m.offset for m in block.after(1)] == [2, 3]
    assert next_offset([first, Record(2)]) == 3


@pytest.mark.parametrize("kind", ["gzip", "transactional"])
def test_fetches_holding_other_batches_are_left_to_aiokafka(kind):
    records = [(1, b"k", b"v" * 100, [])]
    data = (
        _batch(0, records, compression=1)
        if kind == "gzip"
        else _batch(0, records, transactional=True)
    )
    assert scan_batches(np.frombuffer(data, np.uint8))[0] == NOT_PLAIN


def test_a_flipped_bit_or_a_bad_length_is_an_error_never_a_guess():
    rng = random.Random(5)
    good = _batch(0, _random_records(rng, 10))
    for position in (30, 61, 62, len(good) // 2, len(good) - 1):
        bad = bytearray(good)
        bad[position] ^= 0x40
        with pytest.raises(CorruptFetchError, match="do not add up"):
            MessageBlock.fetched("usage", 0, [RawFetch(bytes(bad), len(bad), 0, 10, 10)])
    # A record length running past its batch, with the CRC made right again.
    bad = bytearray(good)
    bad[61] = 0x7E  # zigzag 63: longer than the first record
    bad[17:21] = calc_crc32c(bytes(bad[21:])).to_bytes(4, "big")
    with pytest.raises(CorruptFetchError):
        MessageBlock.fetched("usage", 0, [RawFetch(bytes(bad), len(bad), 0, 10, 10)])


def test_a_batch_length_past_the_fetch_or_short_of_a_header_is_an_error_never_a_read():
    good = _batch(0, _random_records(random.Random(6), 10))
    # An intact batch that runs past the end it was given: its bytes beyond are not read.
    with pytest.raises(CorruptFetchError, match="do not add up"):
        MessageBlock.fetched("usage", 0, [RawFetch(good, len(good) - 10, 0, 10, 10)])
    too_short = bytearray(good)
    too_short[8:12] = (20).to_bytes(4, "big")  # ends inside its own header
    with pytest.raises(CorruptFetchError, match="do not add up"):
        MessageBlock.fetched("usage", 0, [RawFetch(bytes(too_short), len(good), 0, 10, 10)])
    with pytest.raises(CorruptFetchError):  # an end beyond the bytes it was given
        MessageBlock.fetched("usage", 0, [RawFetch(good, len(good) + 1, 0, 10, 10)])


def test_kafka_python_computes_crc32c_in_c():
    """The agent and the load generator publish through kafka-python, whose pure-Python
    CRC-32C caps them near 400-800 reports/s here: the `crc32c` extra must be installed."""
    from kafka.record import util

    assert util.crc32c_c is not None, "pip install 'kafka-python[crc32c]' (pyproject.toml)"
