"""The Faust application: built by :func:`create_app`, never a module-level singleton.

One agent, ``meter_usage_reports``, takes batches of raw messages (``take_events``) and
hands each partition's slice to a :class:`~streams.processor.PartitionProcessor`. Per batch:
decode → validate → aggregate → dead-letter the rejects → write rejected rows and touched
rollups to ClickHouse → acknowledge. Faust acknowledges a ``take_events`` batch in a
``finally`` block, even when the loop body raises, so a batch that cannot be written must
never return: ClickHouse writes retry until they succeed, and anything unexpected stops
the process before the acknowledgement (the batch is then redelivered on restart).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust

from streams.dlq import dead_letter_headers
from streams.processor import (
    BatchOutcome,
    PartitionProcessor,
    PartitionState,
    SourceMessage,
)
from streams.settings import WorkerSettings
from streams.sink import WarehouseSink
from warehouse.client import Warehouse

log = logging.getLogger(__name__)
EXIT_UNPROCESSABLE_BATCH = 70


@dataclass
class WorkerCounters:
    batches: int = 0
    messages: int = 0
    accepted_reports: int = 0
    accepted_samples: int = 0
    skipped_replays: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def absorb(self, outcome: BatchOutcome) -> None:
        self.accepted_reports += outcome.accepted_reports
        self.accepted_samples += outcome.accepted_samples
        self.skipped_replays += outcome.skipped_replays
        self.rejected.update(r.reason for r in outcome.rejections)

    def summary(self) -> str:
        rejected = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"batches={self.batches} messages={self.messages} "
            f"reports={self.accepted_reports} samples={self.accepted_samples} "
            f"replays_skipped={self.skipped_replays} rejected: {rejected}"
        )


class BatchHandler:
    """Everything one batch goes through, apart from Faust itself."""

    def __init__(self, settings: WorkerSettings, sink: WarehouseSink, dlq: Any) -> None:
        self.settings = settings
        self.sink = sink
        self.dlq = dlq
        self.processors: dict[int, PartitionProcessor] = {}
        self.counters = WorkerCounters()

    def processor(self, partition: int) -> PartitionProcessor:
        found = self.processors.get(partition)
        if found is None:
            found = PartitionProcessor(PartitionState(partition), self.settings.processor)
            self.processors[partition] = found
        return found

    async def handle(self, events: Sequence[Any]) -> None:
        by_partition: dict[int, list[SourceMessage]] = {}
        for event in events:
            m = event.message
            by_partition.setdefault(m.partition, []).append(
                SourceMessage(m.topic, m.partition, m.offset, m.key, m.value)
            )
        loop = asyncio.get_running_loop()
        for partition, messages in by_partition.items():
            outcome = self.processor(partition).process(messages)
            await self._dead_letter(outcome)
            # clickhouse-driver blocks; off the loop so heartbeats keep flowing.
            await loop.run_in_executor(None, self.sink.write, outcome)
            self.counters.absorb(outcome)
        self.counters.batches += 1
        self.counters.messages += len(events)

    async def _dead_letter(self, outcome: BatchOutcome) -> None:
        pending = [
            await self.dlq.send(
                key=r.message.key, value=r.message.value, headers=dead_letter_headers(r)
            )
            for r in outcome.rejections
        ]
        for delivery in pending:
            await delivery  # the broker acknowledged it: only now may the source be acked


def create_app(settings: WorkerSettings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{hostport}" for hostport in settings.bootstrap.split(",")],
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        datadir=str(settings.datadir),
        web_enabled=False,
        topic_replication_factor=1,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
    )
    usage = app.topic(
        settings.topic, key_type=bytes, value_type=bytes, partitions=settings.partitions
    )
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes, partitions=1)
    warehouse = Warehouse(settings.clickhouse)
    handler = BatchHandler(settings, WarehouseSink(warehouse), dlq)
    app.meter_handler = handler  # type: ignore[attr-defined]  # for tests and status

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
        log.info("progress: %s", handler.counters.summary())

    return app
