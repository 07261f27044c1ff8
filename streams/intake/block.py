"""One partition's messages of a batch, as columns over one buffer of keys and values.

The hot path decodes the values where they lie; a :class:`SourceMessage` is made only for
a message that needs one (a reject, the twin's path). A null key stays ``None``; a null
value (a tombstone: no report at all) becomes ``b""``, which is rejected as
``empty_message``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.contract import SourceMessage
from streams.errors import CorruptFetchError
from streams.intake.fetch import RawFetch
from streams.intake.records import CORRUPT, CRC32C_TABLES, parse_records

US_PER_MS = 1000


@dataclass(frozen=True)
class MessageBlock:
    topic: str
    partition: int
    buf: np.ndarray  # uint8: each message's key, then its value
    offset: np.ndarray  # int64, increasing
    timestamp_us: np.ndarray  # int64: the record's log timestamp
    key_at: np.ndarray
    key_len: np.ndarray  # -1: a null key
    value_at: np.ndarray
    value_len: np.ndarray  # -1: a null value

    def __len__(self) -> int:
        return len(self.offset)

    def __getitem__(self, i: int) -> SourceMessage:
        klen, vlen = int(self.key_len[i]), int(self.value_len[i])
        key_at, value_at = int(self.key_at[i]), int(self.value_at[i])
        return SourceMessage(
            self.topic,
            self.partition,
            int(self.offset[i]),
            None if klen < 0 else self.buf[key_at : key_at + klen].tobytes(),
            self.buf[value_at : value_at + max(vlen, 0)].tobytes(),
            int(self.timestamp_us[i]),
        )

    def __iter__(self) -> Iterator[SourceMessage]:
        return (self[i] for i in range(len(self)))

    def after(self, applied_offset: int) -> MessageBlock:
        """The messages past ``applied_offset`` (those not yet applied)."""
        first = int(np.searchsorted(self.offset, applied_offset, side="right"))
        return self._rows(slice(first, None))

    def _rows(self, rows: slice) -> MessageBlock:
        return MessageBlock(
            self.topic,
            self.partition,
            self.buf,
            self.offset[rows],
            self.timestamp_us[rows],
            self.key_at[rows],
            self.key_len[rows],
            self.value_at[rows],
            self.value_len[rows],
        )

    @classmethod
    def of(cls, topic: str, partition: int, messages: Sequence[SourceMessage]) -> MessageBlock:
        """A block of messages already in hand (tests, the warm-up, the slow path)."""
        rows = [(m.offset, m.timestamp_us, m.key, m.value) for m in messages]
        return cls._from_rows(topic, partition, rows)

    @classmethod
    def _from_rows(
        cls, topic: str, partition: int, rows: list[tuple[int, int, bytes | None, bytes | None]]
    ) -> MessageBlock:
        n = len(rows)
        key_len = np.array([-1 if k is None else len(k) for _, _, k, _ in rows], np.int64)
        value_len = np.array([-1 if v is None else len(v) for _, _, _, v in rows], np.int64)
        sizes = np.empty(2 * n, np.int64)
        sizes[0::2], sizes[1::2] = np.maximum(key_len, 0), np.maximum(value_len, 0)
        starts = np.zeros(2 * n, np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        buf = np.frombuffer(
            b"".join(b for _, _, k, v in rows for b in (k or b"", v or b"")), np.uint8
        )
        return cls(
            topic,
            partition,
            buf,
            np.array([r[0] for r in rows], np.int64),
            np.array([r[1] for r in rows], np.int64),
            starts[0::2].copy(),
            key_len,
            starts[1::2].copy(),
            value_len,
        )

    @classmethod
    def fetched(cls, topic: str, partition: int, items: Sequence[Any]) -> MessageBlock:
        """A block of what ``getmany`` returned for one partition: :class:`RawFetch`
        items, read here in compiled code, and aiokafka's records (fetches it read)."""
        if not any(isinstance(item, RawFetch) for item in items):
            return cls._from_rows(topic, partition, [_row(r) for r in items])
        capacity = sum(item.records if isinstance(item, RawFetch) else 1 for item in items)
        room = sum(_room(item) for item in items)
        buf = np.empty(room, np.uint8)
        offset, timestamp = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
        key_at, key_len = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
        value_at, value_len = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
        rows, at = 0, 0
        for item in items:
            if isinstance(item, RawFetch):
                data = np.frombuffer(item.data, np.uint8)
                written, at_after = parse_records(
                    data,
                    item.end,
                    item.fetch_offset,
                    CRC32C_TABLES,
                    buf,
                    at,
                    rows,
                    offset,
                    timestamp,
                    key_at,
                    key_len,
                    value_at,
                    value_len,
                )
                if written < 0:
                    what = "lengths or CRC" if written == CORRUPT else "record count"
                    raise CorruptFetchError(
                        f"{topic}[{partition}] from offset {item.fetch_offset}: "
                        f"a record batch's {what} do not add up"
                    )
                timestamp[rows : rows + written] *= US_PER_MS
                rows, at = rows + written, at_after
                continue
            record_offset, ts_us, key, value = _row(item)
            offset[rows], timestamp[rows] = record_offset, ts_us
            for data, at_col, len_col in ((key, key_at, key_len), (value, value_at, value_len)):
                at_col[rows], len_col[rows] = at, -1 if data is None else len(data)
                if data:
                    buf[at : at + len(data)] = np.frombuffer(data, np.uint8)
                    at += len(data)
            rows += 1
        return cls(
            topic,
            partition,
            buf,
            offset[:rows],
            timestamp[:rows],
            key_at[:rows],
            key_len[:rows],
            value_at[:rows],
            value_len[:rows],
        )


def _room(item: Any) -> int:
    if isinstance(item, RawFetch):
        return item.end  # keys and values take less than their batches
    return len(item.key or b"") + len(item.value or b"")


def _row(record: Any) -> tuple[int, int, bytes | None, bytes | None]:
    """An aiokafka record's (offset, timestamp in µs, key, value)."""
    return record.offset, record.timestamp * US_PER_MS, record.key, record.value


def next_offset(items: Sequence[Any]) -> int:
    """The position after the last of one partition's fetched items."""
    last = items[-1]
    return last.next_offset if isinstance(last, RawFetch) else last.offset + 1
