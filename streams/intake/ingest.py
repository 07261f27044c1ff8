"""The worker's way in: record batches straight from the consumer, past Faust's
per-message path.

A Faust agent receives one message at a time: per message, Faust's consumer hands it to
the event loop, creates futures and wakes the stream (docs/BROKER.md: a no-op agent moves
~5k messages/s with a core at 100 %). The hot path wants thousands of messages per call,
so the worker reads its topic with aiokafka (the client Faust itself is built on), whose
``getmany`` here hands out each partition's fetch responses whole (``streams.intake.fetch``);
several fetches make one batch of ``batch_max_messages``, give or take one fetch. Faust
still hosts the worker: lifecycle, the dead-letter producer, the metrics page and timers.
Processing a batch overlaps writing the one before (see :class:`BatchSource`).

Offsets are committed explicitly, after a batch's rows are in the warehouse, and only as
far as the partition states stored there reach: ``write`` says where a worker loading them
would resume. A state is stored every few seconds, not with every batch
(streams/EXACTLY_ONCE.md), so the committed offset trails the batches written; what lies
between is read again after a crash or a rebalance, and rewrites identical rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streams.host.settings import MAX_MESSAGE_BYTES, WorkerSettings
from streams.intake import fetch
from streams.intake.block import next_offset
from streams.intake.fetch import RawFetch

log = logging.getLogger(__name__)

# What getmany returns: per partition, RawFetch items and aiokafka's records, in offset
# order; a streams.intake.block.MessageBlock is made of them on the processing thread.
Records = dict[TopicPartition, list[Any]]
Batch = dict[int, list[Any]]  # the same, by partition number
Job = TypeVar("Job")  # what prepare hands to write
# Reports are kilobytes (48 samples ≈ 6 kB): fetch in large requests. The local broker
# still answers with about a megabyte per partition, so _take gathers several fetches.
_FETCH_MAX_BYTES = 64 << 20
_PARTITION_FETCH_MAX_BYTES = MAX_MESSAGE_BYTES


class BatchSource(Generic[Job]):
    """Reads the usage topic in the worker's consumer group, a batch at a time, in two
    overlapping stages: ``prepare`` (processing, on the event loop) and ``write`` (the
    warehouse, mostly waiting on ClickHouse). Batch n + 1 is prepared while batch n is
    written; writes stay in batch order, and a batch's offsets are committed only after its
    write. ``prepare`` must therefore capture the partition state it hands to ``write``.
    ``write`` returns, per partition, the offset a worker loading the warehouse's stored
    state would resume at: a batch's offsets are committed no further than that. When no
    records come, ``checkpoint`` is asked for a job that stores the lagging states (None:
    none lags), written and committed as a batch is, so that the committed offsets reach
    what was written once the worker is idle.

    ``forget`` is called with the partitions this worker loses in a rebalance, once the
    batch in hand is prepared, written and committed.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        prepare: Callable[[Batch], Awaitable[Job]],
        write: Callable[[Job], Awaitable[Mapping[int, int]]],
        forget: Callable[[set[int]], None],
        *,
        checkpoint: Callable[[], Awaitable[Job | None]],
    ) -> None:
        self.settings = settings
        self.prepare = prepare
        self.write = write
        self.forget = forget
        self.checkpoint = checkpoint
        self.committed: dict[int, int] = {}  # partition -> next offset to read
        self._written_to: dict[TopicPartition, int] = {}  # next offset after what was written
        # Seconds spent per stage since start: where a slow worker's time goes.
        self.stage_seconds: Counter[str] = Counter()
        self._consumer: AIOKafkaConsumer | None = None
        self._handling = asyncio.Lock()
        self._writing: asyncio.Task[None] | None = None
        self._generation = 0  # rebalances begun: records taken in an earlier one are stale

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
            # Whole fetch responses, read on the processing thread (streams.intake.fetch).
            value_deserializer=fetch.raw_values,
        )
        fetch.install()
        consumer.subscribe([s.topic], listener=_Revocations(self))
        await consumer.start()
        self._consumer = consumer
        # The next batch is taken while this one is processed (the handler processes on a
        # thread): fetching and processing overlap instead of taking turns.
        ahead = asyncio.ensure_future(self._take(consumer))
        try:
            clock = time.monotonic
            spent = self.stage_seconds
            while True:
                started = clock()
                generation, records = await ahead
                ahead = asyncio.ensure_future(self._take(consumer))
                async with self._handling:
                    if generation != self._generation:
                        # Taken before a rebalance: the new assignment restarts every
                        # partition at its committed offset, so these come again.
                        continue
                    if not records:
                        await self.settle()  # idle: finish the write in flight
                        await self._catch_up(consumer)
                        continue
                    taken = clock()
                    job = await self.prepare(_batch_of(records))
                    prepared = clock()
                    await self.settle()  # the previous batch is written and committed first
                    spent["fetch"] += taken - started
                    spent["prepare"] += prepared - taken
                    spent["wait_for_write"] += clock() - prepared
                    offsets = {tp: next_offset(rs) for tp, rs in records.items()}
                    self._writing = asyncio.create_task(self._write(consumer, job, offsets))
        finally:
            ahead.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self.settle()), timeout=30)
            finally:
                self._consumer = None
                await consumer.stop()

    async def _take(self, consumer: AIOKafkaConsumer) -> tuple[int, Records]:
        """Up to ``batch_max_messages``, waiting at most ``batch_within_s`` for them: one
        fetch holds about a megabyte per partition, far less than a batch. Returns them with
        the rebalance generation they were taken in."""
        s = self.settings
        deadline = time.monotonic() + s.batch_within_s
        generation = self._generation
        records: Records = {}
        count = 0
        while count < s.batch_max_messages:
            wait_ms = round(max(0.0, deadline - time.monotonic()) * 1000)
            more = await consumer.getmany(
                timeout_ms=wait_ms, max_records=s.batch_max_messages - count
            )
            if generation != self._generation:
                # A rebalance began meanwhile. aiokafka hands out nothing while it is in
                # progress, so ``more`` is from the new assignment; what came before is not.
                generation, records, count = self._generation, {}, 0
            for tp, rs in more.items():
                records.setdefault(tp, []).extend(rs)
                count += sum(r.records if isinstance(r, RawFetch) else 1 for r in rs)
            if not more or wait_ms == 0:
                break
        return generation, records

    async def _catch_up(self, consumer: AIOKafkaConsumer) -> None:
        """Idle, with commits behind what was written: store the lagging states."""
        behind = {
            tp: offset
            for tp, offset in self._written_to.items()
            if offset > self.committed.get(tp.partition, -1)
        }
        if not behind:
            return
        job = await self.checkpoint()
        if job is not None:
            self._writing = asyncio.create_task(self._write(consumer, job, behind))

    async def settle(self) -> None:
        """Wait for the write in flight, if any; re-raises its failure."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def _write(
        self, consumer: AIOKafkaConsumer, job: Job, offsets: dict[TopicPartition, int]
    ) -> None:
        started = time.monotonic()
        resume_at = await self.write(job)
        self.stage_seconds["write"] += time.monotonic() - started
        self._written_to.update(offsets)
        # Committed past the stored state, a message would be neither read again nor in
        # the state a new owner loads: its seq and its windows' sums would be lost.
        durable = {
            tp: offset
            for tp, next_offset in offsets.items()
            if tp.partition in resume_at
            and (offset := min(next_offset, resume_at[tp.partition]))
            > self.committed.get(tp.partition, -1)
        }
        if not durable:
            return
        try:
            await consumer.commit(durable)
        except KafkaError as error:
            # The group moved on (a rebalance): whoever reads these partitions next skips
            # what the warehouse already holds.
            log.warning("offsets not committed (%s); the next owner skips them", error)
            return
        self.committed.update((tp.partition, offset) for tp, offset in durable.items())


def _batch_of(records: Records) -> Batch:
    return {tp.partition: rs for tp, rs in records.items()}


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: BatchSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.source._generation += 1  # before any await: aiokafka stops handing out records
        async with self.source._handling:  # no batch is being prepared now
            await self.source.settle()  # and the last one is written and committed
            lost = {tp.partition for tp in revoked if tp.topic == self.source.settings.topic}
            self.source.forget(lost)
            for partition in lost:
                self.source.committed.pop(partition, None)
            for tp in [tp for tp in self.source._written_to if tp.partition in lost]:
                del self.source._written_to[tp]

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        pass  # a partition's state is loaded when its first batch arrives
