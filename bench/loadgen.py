"""Load for the end-to-end benchmark: a fleet's reports, shifted in time, encoded in bulk
and published in record batches.

Encoding reports one by one with fastavro (≈0.4 ms for 48 samples) and sending them one by
one with kafka-python capped the backlog at about 1k messages/s here, so a minute of load
took many minutes to build. Each node's first report is encoded once; every later report
of the node is that report with ``seq`` set and every timestamp moved on, which a
compiled kernel writes straight from the decoded template (strings copied, longs
re-encoded). aiokafka then sends whole record batches per partition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from schemas import compiled_decoder as d
from schemas.compiled_encoder import encode_shifted
from streams.processing.hotpath.processor import Workspace, decode_batch


class ShiftedReports:
    """Valid v1 frames of ``templates`` (one report per node), shifted per seq."""

    def __init__(self, templates: list[bytes]) -> None:
        self.dec = decode_batch(templates, 64 * len(templates), Workspace())
        if not (self.dec.status == d.OK).all():
            raise ValueError("every template must be a valid v1 report")
        # Every long may grow to 10 bytes: 6 per report, 10 per sample, at most.
        self.out_bytes = len(self.dec.buf) + 10 * (6 * len(templates) + 10 * len(self.dec.s_val))

    def frames(self, seq: int, shift_us: int) -> list[tuple[bytes, int]]:
        """Each template's report number ``seq``, and its end in ms (the record time an
        agent publishing at the end of the interval gives it)."""
        dec = self.dec
        out = np.empty(self.out_bytes, np.uint8)
        out_off = np.empty(len(dec.m_start) + 1, np.int64)
        encode_shifted(
            dec.buf,
            dec.m_start,
            dec.m_str_off,
            dec.m_str_len,
            dec.m_long,
            dec.m_first,
            dec.m_count,
            dec.s_str_off,
            dec.s_str_len,
            dec.s_val,
            seq,
            shift_us,
            out,
            out_off,
        )
        data = out[: out_off[-1]].tobytes()
        edges = out_off.tolist()
        ends_ms = ((dec.m_long[:, 2] + shift_us) // 1000).tolist()
        return [(data[a:b], end) for a, b, end in zip(edges, edges[1:], ends_ms, strict=False)]


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2 of the key) picks."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


Record = tuple[bytes, bytes, int]  # key, value, timestamp in ms


async def _publish(
    bootstrap: str, topic: str, partitions: int, records: Iterable[Record | float]
) -> dict[int, int]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks="all", max_batch_size=1 << 20
    )
    await producer.start()
    counts = dict.fromkeys(range(partitions), 0)
    try:
        open_batches = {p: producer.create_batch() for p in range(partitions)}
        in_flight: list[asyncio.Future] = []

        async def send(p: int) -> None:
            batch = open_batches[p]
            open_batches[p] = producer.create_batch()
            in_flight.append(await producer.send_batch(batch, topic, partition=p))
            if len(in_flight) >= 4 * partitions:
                await asyncio.gather(*in_flight)
                in_flight.clear()

        for record in records:
            if isinstance(record, float):  # a pace mark: send what is open, then wait
                for p in range(partitions):
                    if open_batches[p].record_count():
                        await send(p)
                await asyncio.sleep(max(0.0, record - time.monotonic()))
                continue
            key, value, timestamp_ms = record
            p = partition_of(key, partitions)
            if open_batches[p].append(key=key, value=value, timestamp=timestamp_ms) is None:
                await send(p)  # full: send it, and put the record in a fresh one
                if open_batches[p].append(key=key, value=value, timestamp=timestamp_ms) is None:
                    raise ValueError(f"a {len(value)}-byte record does not fit in a batch")
            counts[p] += 1
        for p in range(partitions):
            if open_batches[p].record_count():
                await send(p)
        await asyncio.gather(*in_flight)
    finally:
        await producer.stop()
    return counts


def publish(
    bootstrap: str, topic: str, partitions: int, records: Iterator[Record | float]
) -> dict[int, int]:
    """Publish records in record batches; returns the records sent per partition.

    A float among the records is a pace mark: the open batches are sent and publishing
    waits until that ``time.monotonic()`` instant.
    """
    return asyncio.run(_publish(bootstrap, topic, partitions, records))
