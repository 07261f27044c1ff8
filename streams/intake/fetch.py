"""Whole fetch responses from aiokafka, for the consumers that ask for them.

aiokafka makes a Python object per record on the event loop; the worker wants a
partition's fetched bytes as they are (``streams.intake.records`` reads them on the processing
thread). aiokafka has no public way to hand them out, so :func:`install` wraps the two
names its fetcher builds a partition's records with, and only for consumers created with
``value_deserializer=raw_values``: such a consumer's ``getmany`` returns, per partition,
:class:`RawFetch` items (one per fetch response) besides ordinary records for fetches
that hold anything but plain batches. Every other consumer is untouched, and if
aiokafka's fetcher ever changes shape, nothing is wrapped and ``raw_values`` is an
identity deserializer: records then come one by one, as before.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.intake.records import PLAIN, scan_batches

log = logging.getLogger(__name__)
_installed = False
_lock = threading.Lock()
# aiokafka's own classes, once install() has wrapped them.
_MemoryRecords: Any = None
_PartitionRecords: Any = None


def raw_values(value: bytes | None) -> bytes | None:
    """The marker deserializer; an identity should aiokafka ever call it."""
    return value


@dataclass(frozen=True)
class RawFetch:
    """One partition's plain record batches of one fetch response, unread."""

    data: bytes
    end: int  # the complete batches end here
    fetch_offset: int  # records below it (in the first batch) were delivered before
    next_offset: int  # the position after these batches
    records: int  # records in the batches, an upper bound for those at fetch_offset or later


class _KeptBytes:
    """aiokafka's MemoryRecords, with the bytes it was made from kept."""

    __slots__ = ("_records", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._records = _MemoryRecords(data)

    def has_next(self) -> bool:
        return self._records.has_next()

    def size_in_bytes(self) -> int:
        return self._records.size_in_bytes()

    def next_batch(self) -> Any:
        return self._records.next_batch()


class _OneRawFetch:
    """Stands in for aiokafka's PartitionRecords: yields one RawFetch, then the position
    after it."""

    def __init__(self, fetch: RawFetch) -> None:
        self.next_fetch_offset = fetch.fetch_offset
        self._fetch: RawFetch | None = fetch

    def __iter__(self) -> _OneRawFetch:
        return self

    def __next__(self) -> RawFetch:
        fetch, self._fetch = self._fetch, None
        if fetch is None:
            raise StopIteration
        self.next_fetch_offset = fetch.next_offset
        return fetch


def _partition_records(
    tp: Any,
    records: Any,
    aborted_transactions: Any,
    fetch_offset: int,
    key_deserializer: Any,
    value_deserializer: Any,
    *args: Any,
) -> Any:
    if value_deserializer is raw_values and isinstance(records, _KeptBytes):
        buf = np.frombuffer(records.data, np.uint8)
        verdict, end, next_offset, count = scan_batches(buf)
        if verdict == PLAIN and end > 0:
            return _OneRawFetch(RawFetch(records.data, end, fetch_offset, next_offset, count))
    return _PartitionRecords(
        tp,
        records,
        aborted_transactions,
        fetch_offset,
        key_deserializer,
        value_deserializer,
        *args,
    )


def install() -> bool:
    """Wrap aiokafka's fetcher (once per process); False if its shape is not the one known."""
    global _installed, _MemoryRecords, _PartitionRecords
    with _lock:
        if _installed:
            return True
        from aiokafka.consumer import fetcher

        memory_records = getattr(fetcher, "MemoryRecords", None)
        partition_records = getattr(fetcher, "PartitionRecords", None)
        if memory_records is None or partition_records is None:
            log.warning("aiokafka's fetcher is not the known shape: reading records one by one")
            return False
        _MemoryRecords, _PartitionRecords = memory_records, partition_records
        fetcher.MemoryRecords = _KeptBytes
        fetcher.PartitionRecords = _partition_records
        _installed = True
        return True
