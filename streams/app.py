"""The Faust application: built by :func:`create_app`, never a module-level singleton.

One agent, ``meter_usage_reports``, takes batches of raw messages (``take_events``) and
hands each partition's slice to that partition's
:class:`~streams.processor.PartitionProcessor`, whose state is loaded from the warehouse
the first time this worker sees the partition and forgotten when the partition is
revoked. Per batch and partition: process → dead-letter the rejects → write everything
and then the state to ClickHouse → acknowledge (``streams/EXACTLY_ONCE.md``).

Faust acknowledges a ``take_events`` batch in a ``finally`` block, even when the loop
body raises, so a batch that was not written must never return: ClickHouse writes retry
until they succeed, and anything unexpected ends the process before the acknowledgement
(the batch is then redelivered to whoever owns the partition next).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import faust

from streams import metrics
from streams.dlq import dead_letter_headers
from streams.hotpath.processor import FastPartitionProcessor
from streams.processor import BatchOutcome, PartitionProcessor, SourceMessage
from streams.settings import WorkerSettings
from streams.sink import WarehouseSink, load_state
from warehouse.client import Warehouse

log = logging.getLogger(__name__)
EXIT_UNPROCESSABLE_BATCH = 70


class BatchHandler:
    """Everything one batch goes through, apart from Faust itself."""

    def __init__(self, settings: WorkerSettings, warehouse: Warehouse, dlq: Any) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.sink = WarehouseSink(warehouse)
        self.dlq = dlq
        self.processors: dict[int, PartitionProcessor | FastPartitionProcessor] = {}
        self.rejected_by_reason: Counter[str] = Counter()
        self.batches = 0

    async def processor(self, partition: int) -> PartitionProcessor | FastPartitionProcessor:
        found = self.processors.get(partition)
        if found is None:
            loop = asyncio.get_running_loop()
            state = await loop.run_in_executor(
                None, load_state, self.warehouse, self.settings.topic, partition
            )
            log.info("partition %d: resuming after offset %d", partition, state.applied_offset)
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

    async def handle(self, events: Sequence[Any]) -> None:
        by_partition: dict[int, list[SourceMessage]] = {}
        for event in events:
            m = event.message
            timestamp_us = round(m.timestamp * 1000) * 1000  # Kafka timestamps are ms
            by_partition.setdefault(m.partition, []).append(
                SourceMessage(m.topic, m.partition, m.offset, m.key, m.value, timestamp_us)
            )
        written = []
        for partition, messages in by_partition.items():
            processor = await self.processor(partition)
            outcome = processor.process(messages)
            if outcome.skipped_replays == len(messages):
                continue  # every message was applied before: nothing new to write
            await self._dead_letter(outcome)
            written.append((outcome, processor.state))
        if written:
            # One write for every partition of the batch, off the loop (the driver
            # blocks) so that heartbeats keep flowing.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.sink.write_many, written)
            for outcome, _ in written:
                self.rejected_by_reason.update(r.reason for r in outcome.rejections)
        self.batches += 1

    async def _dead_letter(self, outcome: BatchOutcome) -> None:
        pending = [
            await self.dlq.send(
                key=r.message.key, value=r.message.value, headers=dead_letter_headers(r)
            )
            for r in outcome.rejections
        ]
        for delivery in pending:
            await delivery  # the broker acknowledged it: only now may the source be acked

    def partition_views(self, consumer: Any) -> list[metrics.PartitionView]:
        committed = getattr(consumer, "_committed_offset", {})
        views = []
        for partition, processor in sorted(self.processors.items()):
            tp = faust.types.TP(self.settings.topic, partition)
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # not fetched yet, or no longer assigned
                highwater = None
            state = processor.state
            views.append(
                metrics.PartitionView(
                    partition,
                    dict(state.counters),
                    state.open_gaps(),
                    state.applied_offset,
                    committed.get(tp),
                    highwater,
                )
            )
        return views


def create_app(settings: WorkerSettings) -> faust.App:
    web: dict[str, Any] = {"web_enabled": False}
    if settings.metrics_port is not None:
        web = {
            "web_enabled": True,
            "web_port": settings.metrics_port,
            "web_bind": settings.metrics_host,
            "web_host": settings.metrics_host,
        }
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{hostport}" for hostport in settings.bootstrap.split(",")],
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        datadir=str(settings.datadir),
        topic_replication_factor=1,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        **web,
    )
    usage = app.topic(
        settings.topic, key_type=bytes, value_type=bytes, partitions=settings.partitions
    )
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes, partitions=1)
    handler = BatchHandler(settings, Warehouse(settings.clickhouse), dlq)
    app.meter_handler = handler  # type: ignore[attr-defined]  # for tests and status

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        handler.forget({tp.partition for tp in revoked if tp.topic == settings.topic})

    @app.agent(usage, name="meter_usage_reports")
    async def meter_usage_reports(stream: faust.StreamT) -> None:
        async for events in stream.take_events(
            settings.batch_max_messages, within=settings.batch_within_s
        ):
            try:
                await handler.handle(events)
            except BaseException:
                # Returning would let Faust acknowledge a batch that was not written.
                log.critical("batch could not be processed; exiting unacknowledged", exc_info=True)
                logging.shutdown()
                os._exit(EXIT_UNPROCESSABLE_BATCH)

    @app.timer(interval=10.0)
    async def log_progress() -> None:
        for view in handler.partition_views(app.consumer):
            log.info(
                "partition %d: applied %d, %s, open gaps %d",
                view.partition, view.applied_offset, dict(view.counters), view.open_gaps,
            )  # fmt: skip

    if settings.metrics_port is not None:

        @app.page("/metrics")
        async def prometheus_metrics(web: Any, request: Any) -> Any:
            body = metrics.render(
                settings.topic,
                handler.partition_views(app.consumer),
                handler.rejected_by_reason,
                handler.batches,
            )
            return web.text(body, content_type="text/plain; version=0.0.4")

    return app
