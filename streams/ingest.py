"""The worker's way in: record batches straight from the consumer, past Faust's
per-message path.

A Faust agent receives one message at a time: per message, Faust's consumer hands it to
the event loop, creates futures and wakes the stream (shared/PERF.md: a no-op agent moves
~5k messages/s with a core at 100 %). The hot path wants thousands of messages per call,
so the worker reads its topic with aiokafka (the client Faust itself is built on):
``getmany`` returns each partition's records as one list, straight from the fetched
record batches. Faust still hosts the worker: lifecycle, the dead-letter producer, the
metrics page and timers.

Offsets are committed explicitly, after a batch's rows and partition state are in the
warehouse. The warehouse's state is what makes the result exact (streams/EXACTLY_ONCE.md);
the committed offset only saves re-reading: a batch re-read after a crash or a rebalance is
skipped up to the stored applied offset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streams.processor import SourceMessage
from streams.settings import WorkerSettings

log = logging.getLogger(__name__)

Batch = dict[int, list[SourceMessage]]  # partition -> messages in offset order
# Room for a whole batch in one fetch: reports are kilobytes (48 samples ≈ 6 kB).
_FETCH_MAX_BYTES = 64 << 20
_PARTITION_FETCH_MAX_BYTES = 16 << 20


class BatchSource:
    """Reads the usage topic in the worker's consumer group, a batch at a time.

    ``handle`` is awaited with each batch; its offsets are committed only after it
    returns. ``forget`` is called with the partitions this worker loses in a rebalance,
    never while a batch is being handled.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        handle: Callable[[Batch], Awaitable[None]],
        forget: Callable[[set[int]], None],
    ) -> None:
        self.settings = settings
        self.handle = handle
        self.forget = forget
        self.committed: dict[int, int] = {}  # partition -> next offset to read
        self._consumer: AIOKafkaConsumer | None = None
        self._handling = asyncio.Lock()

    def highwater(self, partition: int) -> int | None:
        if self._consumer is None:
            return None
        return self._consumer.highwater(TopicPartition(self.settings.topic, partition))

    async def run(self) -> None:
        """Consume until cancelled."""
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap.split(","),
            group_id=s.app_id,
            client_id=f"{s.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=round(s.session_timeout_s * 1000),
            heartbeat_interval_ms=round(s.heartbeat_interval_s * 1000),
            fetch_max_bytes=_FETCH_MAX_BYTES,
            max_partition_fetch_bytes=_PARTITION_FETCH_MAX_BYTES,
        )
        consumer.subscribe([s.topic], listener=_Revocations(self))
        await consumer.start()
        self._consumer = consumer
        try:
            while True:
                records = await consumer.getmany(
                    timeout_ms=round(s.batch_within_s * 1000), max_records=s.batch_max_messages
                )
                if records:
                    async with self._handling:
                        await self._handle(consumer, records)
        finally:
            self._consumer = None
            await consumer.stop()

    async def _handle(self, consumer: AIOKafkaConsumer, records: Mapping) -> None:
        batch: Batch = {
            tp.partition: [
                # Kafka timestamps are milliseconds.
                SourceMessage(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp * 1000)
                for r in rs
            ]
            for tp, rs in records.items()
        }
        await self.handle(batch)
        offsets = {tp: rs[-1].offset + 1 for tp, rs in records.items()}
        try:
            await consumer.commit(offsets)
        except KafkaError as error:
            # The group moved on (a rebalance): whoever reads these partitions next skips
            # what the warehouse already holds.
            log.warning("offsets not committed (%s); the next owner skips them", error)
            return
        self.committed.update((tp.partition, offset) for tp, offset in offsets.items())


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: BatchSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.source._handling:  # let the batch in hand finish and commit first
            lost = {tp.partition for tp in revoked if tp.topic == self.source.settings.topic}
            self.source.forget(lost)
            for partition in lost:
                self.source.committed.pop(partition, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        pass  # a partition's state is loaded when its first batch arrives
