"""The Faust application: built by :func:`create_app`, never a module-level singleton.

The usage topic is read a batch at a time by :class:`~streams.intake.ingest.BatchSource`, not by
a Faust agent: Faust's per-message path caps an agent at a few thousand messages per second
(docs/BROKER.md). Faust hosts the worker around it: lifecycle and signals, the dead-letter
producer, the metrics page and the progress timer; its own consumer is not started.

Each partition's slice of a batch goes to that partition's processor (the hot path, or its
readable twin with ``--plain``), whose state is loaded from the warehouse the first time
this worker sees the partition and forgotten when the partition is revoked. Per batch:
process (on a thread of its own, while the event loop fetches the next batch) →
dead-letter the rejects → write everything and then the states to ClickHouse →
commit the offsets as far as the stored snapshots reach (``streams/EXACTLY_ONCE.md``). A
partition's whole state is stored with its first batch, then every
``snapshot_interval_s``, one partition a batch: storing it costs tens of times what
processing a batch does. A batch that cannot be written is never committed: ClickHouse
writes retry until they succeed, and anything unexpected ends the process (the batch is
then read again by whoever owns the partition next).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import MessageSizeTooLargeError
from faust.app.base import BootStrategy
from faust.exceptions import ProducerSendError

from streams.contract import BatchOutcome
from streams.host import metrics
from streams.host.settings import DLQ_HEADROOM_BYTES, MAX_MESSAGE_BYTES, WorkerSettings
from streams.intake.block import MessageBlock
from streams.intake.ingest import Batch, BatchSource
from streams.output.dlq import dead_letter_record
from streams.output.sink import StateRow, WarehouseSink, load_state, state_row
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.processor import PartitionProcessor
from warehouse.client import Warehouse

log = logging.getLogger(__name__)
EXIT_UNPROCESSABLE_BATCH = 70
Written = list[tuple[BatchOutcome, StateRow]]


class BatchHandler:
    """Everything one batch goes through, apart from Faust itself."""

    def __init__(
        self,
        settings: WorkerSettings,
        warehouse: Warehouse,
        dlq: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        # partition -> when this worker last took its snapshot (none yet: its next batch does)
        self._snapshot_taken_at: dict[int, float] = {}
        # partition -> the offset a worker loading the stored snapshot resumes at
        self.resume_at: dict[int, int] = {}
        self.warehouse = warehouse
        self.sink = WarehouseSink(warehouse)
        self.dlq = dlq
        self.processors: dict[int, PartitionProcessor | FastPartitionProcessor] = {}
        self.rejected_by_reason: Counter[str] = Counter()
        self.batches = 0
        # Partition batches the hot path handed to its readable twin (another schema
        # version, values past its integer bounds): valid agents' input should give none.
        self.batches_to_twin = 0
        # Partitions are independent, so a batch's partitions are processed side by side
        # (the compiled kernels release the GIL); batches still go one after another, so
        # each state is touched by one thread at a time. The metrics page and the progress
        # log read ``views``, taken on those threads after each partition's part.
        self._processing = ThreadPoolExecutor(
            settings.processing_threads, thread_name_prefix="process"
        )
        self.views: dict[int, PartitionSnapshot] = {}

    async def processor(self, partition: int) -> PartitionProcessor | FastPartitionProcessor:
        found = self.processors.get(partition)
        if found is None:
            loop = asyncio.get_running_loop()
            state = await loop.run_in_executor(
                None, load_state, self.warehouse, self.settings.topic, partition
            )
            log.info("partition %d: resuming after offset %d", partition, state.applied_offset)
            self.resume_at[partition] = state.applied_offset + 1
            processor_class = (
                FastPartitionProcessor if self.settings.hot_path else PartitionProcessor
            )
            found = processor_class(state, self.settings.processor)
            self.processors[partition] = found
        return found

    def forget(self, partitions: set[int]) -> None:
        """Drop state of partitions that another worker may now advance."""
        for partition in partitions:
            self.processors.pop(partition, None)
            self.views.pop(partition, None)
            self._snapshot_taken_at.pop(partition, None)
            self.resume_at.pop(partition, None)

    def _snapshots_due(self, partitions: list[int], now_s: float) -> set[int]:
        """The partitions whose whole state this batch stores: each one's first batch since
        it was loaded, and the one left longest if that is ``snapshot_interval_s`` or
        more (one a batch, so that no batch pays for every partition at once).

        The first batch stores one because a state loaded from before migration 0022 lies
        in ``partition_state``, which this batch's progress row replaces once merged: its
        snapshot must be in ``partition_snapshots`` by then (it is written first)."""
        taken = self._snapshot_taken_at
        due = {p for p in partitions if p not in taken}
        overdue = [
            (taken[p], p)
            for p in partitions
            if p in taken and now_s - taken[p] >= self.settings.snapshot_interval_s
        ]
        if overdue:
            due.add(min(overdue)[1])
        return due

    async def prepare(self, by_partition: Batch) -> Written:
        """Process a batch and dead-letter its rejects; returns what is to be written, with
        each partition's state as of the end of the batch."""
        work = [(await self.processor(p), messages) for p, messages in by_partition.items()]
        now_s = self._clock()
        due = self._snapshots_due(list(by_partition), now_s)
        # Off the loop, which goes on fetching the next batch meanwhile. Every part is
        # awaited before anything fails, so no thread still works on a state after it.
        loop = asyncio.get_running_loop()
        parts = [
            loop.run_in_executor(
                self._processing,
                _process_one,
                processor,
                fetched,
                processor.state.partition in due,
            )
            for processor, fetched in work
        ]
        done = await asyncio.gather(*parts, return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException):
                raise result
        written: Written = []
        for (processor, _), (outcome, row, view) in zip(work, done, strict=True):
            self.views[processor.state.partition] = view
            self.batches_to_twin += view.to_twin
            if row is None:
                continue  # every message was applied before: nothing new to write
            if row.snapshot is not None:
                self._snapshot_taken_at[processor.state.partition] = now_s
            await self._dead_letter(outcome)
            written.append((outcome, row))
        self.batches += 1
        return written

    async def checkpoint(self) -> Written | None:
        """Idle: the snapshots of the partitions whose stored snapshot lags their state,
        with their progress; None if every stored snapshot is current. All at once: a
        worker is idle when no record came for ``batch_within_s``, and the group's
        committed offsets reach what it wrote only once they are stored."""
        lagging = sorted(
            p
            for p, processor in self.processors.items()
            if self.resume_at.get(p, 0) <= processor.state.applied_offset
        )
        if not lagging:
            return None
        loop = asyncio.get_running_loop()
        states = [self.processors[p].state for p in lagging]
        rows = await asyncio.gather(
            *(loop.run_in_executor(self._processing, state_row, s, True) for s in states)
        )
        now_s = self._clock()
        written: Written = []
        for state, row in zip(states, rows, strict=True):
            self._snapshot_taken_at[state.partition] = now_s
            outcome = BatchOutcome(state.topic, state.partition, state.applied_offset)
            written.append((outcome, row))
        return written

    async def write(self, written: Written) -> dict[int, int]:
        """Write a prepared batch; returns, per partition, the offset a worker loading the
        stored snapshots would resume at (how far the batch may be committed)."""
        if written:
            # One write for every partition of the batch, off the loop (the driver blocks)
            # so that heartbeats keep flowing and the next batch is processed meanwhile.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.sink.write_many, written)
        for outcome, row in written:
            self.rejected_by_reason.update(r.reason for r in outcome.rejections)
            if row.snapshot is not None:
                self.resume_at[outcome.partition] = row.applied_offset + 1
        return dict(self.resume_at)

    async def _dead_letter(self, outcome: BatchOutcome) -> None:
        """Send every reject and await the acks: only then may the source be acked.

        A record the broker refuses as too large (a dead-letter topic with a smaller limit
        than ours) is sent again as a stub, so that a poison message never stops the
        partition; the whole payload is in ``rejected_reports`` (streams/output/dlq.py).
        """
        pending = []
        for rejection in outcome.rejections:
            value, headers = dead_letter_record(rejection)
            pending.append(
                (
                    rejection,
                    await self.dlq.send(key=rejection.message.key, value=value, headers=headers),
                )
            )
        for rejection, delivery in pending:
            try:
                await delivery
            except (MessageSizeTooLargeError, ProducerSendError) as exc:
                if not _too_large(exc):
                    raise
                log.warning(
                    "partition %d offset %d: the broker refused its %d-byte dead letter as too "
                    "large; sending a stub (the payload is in rejected_reports)",
                    rejection.message.partition,
                    rejection.message.offset,
                    len(rejection.message.value),
                )
                value, headers = dead_letter_record(rejection, whole=False)
                await (await self.dlq.send(key=rejection.message.key, value=value, headers=headers))

    def partition_views(self, source: BatchSource) -> list[metrics.PartitionView]:
        return [
            metrics.PartitionView(
                partition,
                view.counters,
                view.open_gaps,
                view.applied_offset,
                source.committed.get(partition),
                source.highwater(partition),
            )
            for partition, view in sorted(self.views.items())
        ]


@dataclass(frozen=True)
class PartitionSnapshot:
    """What the metrics page shows of a partition's state, as of its last batch."""

    counters: dict[str, int]
    open_gaps: int
    applied_offset: int
    to_twin: int = 0  # 1 if the hot path handed this batch to the twin


def _too_large(exc: BaseException) -> bool:
    """Whether a send failed because the record was too large (Faust wraps the cause)."""
    return isinstance(exc, MessageSizeTooLargeError) or isinstance(
        exc.__cause__, MessageSizeTooLargeError
    )


def _process_one(
    processor: PartitionProcessor | FastPartitionProcessor, fetched: list[Any], snapshot: bool
) -> tuple[BatchOutcome, StateRow | None, PartitionSnapshot]:
    """A partition's outcome, its state row (None: every message was a replay, nothing to
    write; with the whole state's snapshot if ``snapshot``) and the metrics' view of it."""
    state = processor.state
    block = MessageBlock.fetched(state.topic, state.partition, fetched)
    handed_before = getattr(processor, "batches_to_twin", 0)  # the twin itself has none
    outcome = processor.process(block)
    replays_only = outcome.skipped_replays == len(block)
    to_twin = getattr(processor, "batches_to_twin", 0) - handed_before
    view = PartitionSnapshot(dict(state.counters), state.open_gaps(), state.applied_offset, to_twin)
    return outcome, None if replays_only else state_row(state, snapshot), view


class _HostBoot(BootStrategy):
    enable_kafka_consumer = False  # the usage topic is read by BatchSource


class _HostApp(faust.App):
    BootStrategy = _HostBoot


def create_app(settings: WorkerSettings) -> faust.App:
    web: dict[str, Any] = {"web_enabled": False}
    if settings.metrics_port is not None:
        web = {
            "web_enabled": True,
            "web_port": settings.metrics_port,
            "web_bind": settings.metrics_host,
            "web_host": settings.metrics_host,
        }
    app = _HostApp(
        settings.app_id,
        broker=[f"kafka://{hostport}" for hostport in settings.bootstrap.split(",")],
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        datadir=str(settings.datadir),
        topic_replication_factor=settings.replication_factor,
        topic_partitions=settings.partitions,
        producer_acks=-1,
        # Dead letters: a rejected message is sent whole up to the pipeline's limit.
        producer_max_request_size=MAX_MESSAGE_BYTES + DLQ_HEADROOM_BYTES,
        **web,
    )
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes, partitions=1)
    handler = BatchHandler(settings, Warehouse(settings.clickhouse), dlq)
    source = BatchSource(
        settings, handler.prepare, handler.write, handler.forget, checkpoint=handler.checkpoint
    )
    app.meter_handler = handler  # type: ignore[attr-defined]  # for tests and status

    @app.task
    async def meter_usage_reports() -> None:
        try:
            await source.run()
        except asyncio.CancelledError:
            # The worker is stopping: a write still retrying in its thread gives up now
            # (its batch is not committed, so it is read again after a restart).
            handler.warehouse.cancel()
            raise
        except BaseException:
            # Nothing of the batch in hand was committed: its partitions are read again.
            log.critical("batch could not be processed; exiting uncommitted", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_UNPROCESSABLE_BATCH)

    logged_at_batches = [-1]

    @app.timer(interval=10.0)
    async def log_progress() -> None:
        if handler.batches == logged_at_batches[0]:
            return  # idle since the last summary: nothing new to say
        logged_at_batches[0] = handler.batches
        spent = ", ".join(f"{k} {v:.1f}" for k, v in sorted(source.stage_seconds.items()))
        log.info("%d batches; seconds spent: %s", handler.batches, spent or "none yet")
        for view in handler.partition_views(source):
            log.info(
                "partition %d: applied %d, %s, open gaps %d",
                view.partition,
                view.applied_offset,
                dict(view.counters),
                view.open_gaps,
            )

    if settings.metrics_port is not None:

        @app.page("/metrics")
        async def prometheus_metrics(web: Any, request: Any) -> Any:
            body = metrics.render(
                settings.topic,
                handler.partition_views(source),
                handler.rejected_by_reason,
                handler.batches,
                source.stage_seconds,
                handler.batches_to_twin,
            )
            return web.text(body, content_type="text/plain; version=0.0.4")

    return app
