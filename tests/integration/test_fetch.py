"""Whole fetch responses from the real broker (streams.intake.fetch), read into blocks
(streams.intake.block), against what aiokafka's own per-record path reads from the same topic."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.host.topics import ensure_topics
from streams.intake import fetch
from streams.intake.block import MessageBlock
from streams.intake.fetch import RawFetch

pytestmark = pytest.mark.integration


async def _publish(bootstrap: str, topic: str, rows: list, compression: str | None) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=compression,
        max_batch_size=64 << 10,
        linger_ms=5,
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, value=v, key=k, partition=0) for k, v in rows]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, total: int, raw: bool) -> tuple[list, int]:
    """Everything on partition 0 as (offset, key, value), and how many items were whole
    fetches."""
    extra = {"value_deserializer": fetch.raw_values} if raw else {}
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", **extra
    )
    await consumer.start()
    got: list = []
    whole = 0
    try:
        while len(got) < total:
            more = await consumer.getmany(timeout_ms=2000)
            assert more, f"stalled at {len(got)} of {total}"
            for tp, items in more.items():
                whole += sum(isinstance(i, RawFetch) for i in items)
                block = MessageBlock.fetched(tp.topic, tp.partition, items)
                got.extend((m.offset, m.key, m.value) for m in block)
    finally:
        await consumer.stop()
    return got, whole


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_whole_fetches_read_what_aiokafka_reads(stack, unique_name, compression):
    fetch.install()
    topic = f"raw-{unique_name}".replace("_", "-")
    ensure_topics(stack.bootstrap, {topic: 1})
    rng = random.Random(3)
    rows = []
    for i in range(600):
        tombstone = i % 50 == 49  # a null value needs a key
        key = None if i % 7 == 3 and not tombstone else b"node-%d" % (i % 13)
        rows.append((key, None if tombstone else rng.randbytes(rng.randrange(0, 6_000))))
    asyncio.run(_publish(stack.bootstrap, topic, rows, compression))
    raw, whole = asyncio.run(_consume(stack.bootstrap, topic, len(rows), raw=True))
    plain, none = asyncio.run(_consume(stack.bootstrap, topic, len(rows), raw=False))
    # A tombstone (null value) reads as b"" in a block, whichever path read it.
    expected = [(o, k, v or b"") for o, (k, v) in enumerate(rows)]
    assert raw == plain == expected
    assert none == 0
    if compression is None:
        assert whole >= 1  # handed out whole
    else:
        assert whole == 0  # compressed batches: aiokafka's own path, record by record
