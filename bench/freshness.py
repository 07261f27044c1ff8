"""``meter bench freshness``: how soon a tenant sees a report's usage in the portal.

A steady fleet (default 25,000 nodes, each reporting once a minute: about 417 reports/s)
is published, at that rate and in real time, to the local broker; the metering worker
writes ClickHouse; and this process, reading as the portal does (the finance user), polls
each partition's applied offset in ``pipeline_progress`` every 50 ms. The worker writes a
batch's rollups before the partition's state, so once a partition's applied offset has
reached a report, its usage is in the views the portal's live page reads. Per report:
from the broker's acknowledgement (the producer's callback) to the first poll answered
with that offset applied. The baseline is a plain consumer of one partition of the
same topic in this process: acknowledgement to the record being fetched (the broker's own
floor).

Reports carry the current time (each covers the minute before it is published), so they
are this month's, live. After the run, the rollups and the ledger are checked against
what was published, exactly.

The publisher and the baseline consumer are aiokafka's, whose record batches are built and
read in compiled code. kafka-python's checksum each record batch with a CRC-32C in pure
Python unless the optional ``crc32c`` module is present (5.8 MB/s measured here): at
417 reports of 6 kB a second that took most of a core from the machine the worker shares,
and the baseline fell a minute behind (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.e2e import bench_pipeline, build_backlog, say
from bench.loadgen import Record
from core.units import US_PER_SECOND
from meter.runner import WorkerProcess, totals_exact
from stack import LocalStack
from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER
from warehouse.client import Warehouse

POLL_S = 0.05


def _figures(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_s": None, "p99_s": None, "max_s": None}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)], 3)

    return {"p50_s": at(0.50), "p99_s": at(0.99), "max_s": round(ordered[-1], 3)}


class Poller(threading.Thread):
    """Each partition's applied offset, every POLL_S, as the portal's connection reads it."""

    def __init__(self, warehouse: Warehouse, topic: str) -> None:
        super().__init__(daemon=True)
        self.warehouse, self.topic = warehouse, topic
        self.seen: dict[int, tuple[list[float], list[int]]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rows = self.warehouse.execute(
                "SELECT partition, applied_offset FROM pipeline_progress WHERE topic = %(t)s",
                {"t": self.topic},
            )
            answered = time.monotonic()
            for partition, applied in rows:
                times, offsets = self.seen.setdefault(int(partition), ([], []))
                if not offsets or applied > offsets[-1]:
                    times.append(answered)
                    offsets.append(int(applied))
            self.stop.wait(POLL_S)

    def visible_at(self, partition: int, offset: int, after: float) -> float | None:
        times, offsets = self.seen.get(partition, ([], []))
        i = max(bisect.bisect_left(offsets, offset), bisect.bisect_left(times, after))
        return times[i] if i < len(times) else None


class Fetcher(threading.Thread):
    """The baseline: a plain consumer (on its own thread and event loop) noting when each
    record of ``partitions`` is fetched."""

    def __init__(self, bootstrap: str, topic: str, partitions: list[int]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.fetched: dict[tuple[int, int], float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._fetch())

    async def _fetch(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap.split(","),
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(self.topic, p) for p in self.partitions])
            while not self.stop.is_set():
                for tp, records in (await consumer.getmany(timeout_ms=50)).items():
                    now = time.monotonic()
                    for record in records:
                        self.fetched[(tp.partition, record.offset)] = now
        finally:
            await consumer.stop()


Ack = tuple[int, int, float, float]  # partition, offset, acknowledged at, sent at


class SteadyPublisher:
    """Publishes records one by one at a fixed rate, noting each one's acknowledgement."""

    def __init__(self, bootstrap: str, topic: str, records: Iterator[Record]) -> None:
        self.bootstrap, self.topic, self.records = bootstrap, topic, records
        self.acks: list[Ack] = []
        self.sent = 0

    async def run(
        self,
        warm: int,
        rate: float,
        total: int,
        ready: Callable[[], bool],
        alive: Callable[[], bool],
        say_every: int,
    ) -> tuple[float, int, float]:
        """``warm`` records, then (once ``ready()``) the rest up to ``total`` at ``rate``
        a second. Returns when the clock started, the records sent before it, and how long
        publishing took."""
        # aiokafka keeps one request in flight per broker and one open batch per
        # partition, whose sender waits once it is full: at the default 16 kB (two
        # reports) the publisher, not the broker, capped the rate near 300 reports/s.
        # While the broker keeps up each request still carries about one report, as
        # 25,000 agents' requests would.
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap.split(","),
            acks="all",
            linger_ms=2,
            max_batch_size=1 << 20,
        )
        await producer.start()
        pending: set[asyncio.Future[Any]] = set()
        try:
            for _ in range(warm):
                pending.add(await self._send(producer))
            await asyncio.gather(*pending)
            pending.clear()
            ready_by = time.monotonic() + 180
            while not ready():
                if time.monotonic() > ready_by or not alive():
                    raise RuntimeError("the worker metered nothing in 180 s")
                await asyncio.sleep(0.2)
            say("the worker is metering; the clock starts")
            began, first = time.monotonic(), self.sent
            while self.sent < total:
                pause = began + (self.sent - first) / rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                future = await self._send(producer)
                pending.add(future)
                future.add_done_callback(pending.discard)
                if self.sent % say_every == 0:
                    say(f"{self.sent:,} reports published, {time.monotonic() - began:.0f} s")
                    if not alive():
                        raise RuntimeError("the worker exited")
            await asyncio.wait_for(asyncio.gather(*pending), 30)
            return began, first, time.monotonic() - began
        finally:
            await producer.stop()

    async def _send(self, producer: AIOKafkaProducer) -> asyncio.Future[Any]:
        key, value, _ = next(self.records)
        sent_at = time.monotonic()
        future = await producer.send(self.topic, value, key=key)

        def acked(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                meta = done.result()
                self.acks.append((meta.partition, meta.offset, time.monotonic(), sent_at))

        future.add_done_callback(acked)
        self.sent += 1
        return future


def run_freshness(
    nodes: int,
    seconds: float,
    warmup_s: float,
    partitions: int,
    folder: Path | None,
) -> dict[str, Any]:
    folder = folder or Path(tempfile.mkdtemp(prefix="meter-fresh-"))
    stack = LocalStack(folder)
    info = stack.up()
    name = f"fresh_{uuid.uuid4().hex[:6]}"
    round_s = 60.0
    # Whole rounds (every node once a minute), all published: the totals are of them all.
    rounds = max(math.ceil((warmup_s + seconds) / round_s), 1)
    now_us = time.time_ns() // 1000
    tick_us = 10 * US_PER_SECOND
    # Each report covers a minute that ended before it is published (never in the future).
    start_us = (now_us // tick_us) * tick_us - 2 * 60 * US_PER_SECOND
    try:
        warehouse, settings = bench_pipeline(info, name, partitions, folder)
        stack.allow_finance(name)
        portal = Warehouse(
            replace(info.settings(name), user=FINANCE_USER, password=FINANCE_PASSWORD)
        )
        worker = WorkerProcess.start(settings, folder / "worker.log")
        say(f"building {nodes:,} nodes' reports; worker starting")
        # Each node's first report, shifted per seq in compiled code (bench/loadgen.py):
        # generating 417 reports/s in Python would hold the GIL the timing threads need.
        frames, emitted = build_backlog(nodes, rounds, start_us=start_us)
        records = (r for r in frames if not isinstance(r, float))
        publisher = SteadyPublisher(info.bootstrap, settings.topic, records)
        poller = Poller(portal, settings.topic)
        # The baseline reads one partition (an eighth of the reports at the defaults): a
        # second reader of everything doubled the broker's fetch work, on the cores the
        # worker and the publisher share, and fell a minute behind (docs/PERFORMANCE.md).
        fetcher = Fetcher(info.bootstrap, settings.topic, [0])
        poller.start()
        fetcher.start()
        rate = nodes / round_s
        say(f"publishing {rate:,.0f} reports/s for {rounds} minute(s) ({warmup_s:.0f} s warm-up)")
        acks = publisher.acks
        try:
            # The first reports wait for the worker to join and write: the clock starts once
            # it has (a worker's start-up is not freshness).
            began, first, published_s = asyncio.run(
                publisher.run(
                    warm=4 * partitions,
                    rate=rate,
                    total=nodes * rounds,
                    ready=lambda: all(poller.visible_at(p, o, 0) for p, o, _, _ in list(acks)),
                    alive=worker.alive,
                    say_every=nodes // 4 or 1,
                )
            )
            # Until every report is visible (or 120 s): the totals are checked after.
            settle_by = time.monotonic() + 120
            while time.monotonic() < settle_by and not all(
                poller.visible_at(p, o, 0) for p, o, _, _ in list(acks)
            ):
                time.sleep(0.5)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; see {worker.log_path}") from error
        finally:
            poller.stop.set()
            fetcher.stop.set()
            poller.join(5)
            fetcher.join(5)
            worker.stop()
        sent = publisher.sent
        measured = [a for a in acks if a[3] >= began + warmup_s]
        fresh, floor, unseen = [], [], 0
        for partition, offset, acked_at, _ in measured:
            seen = poller.visible_at(partition, offset, acked_at)
            if seen is None:
                unseen += 1
            else:
                fresh.append(seen - acked_at)
            fetched = fetcher.fetched.get((partition, offset))
            if fetched is not None:
                floor.append(max(fetched - acked_at, 0.0))
        exact = totals_exact(emitted, warehouse)
        result = {
            "nodes": nodes,
            "gpus_per_node": 8,
            "partitions": partitions,
            "target_reports_per_s": round(rate, 1),
            "achieved_reports_per_s": round((sent - first) / published_s, 1),
            "reports_published": sent,
            "reports_measured": len(measured),
            "reports_unseen": unseen,
            "poll_interval_s": POLL_S,
            "freshness": _figures(fresh),
            "baseline_consumer": _figures(floor),
            "exact": exact,
        }
        base = result["baseline_consumer"]["p99_s"]
        result["ratio_p99"] = (
            round(result["freshness"]["p99_s"] / base, 1)
            if base and result["freshness"]["p99_s"] is not None
            else None
        )
        warehouse.drop_database()
        warehouse.close()
        portal.close()
        return result
    finally:
        stack.down()


def main_freshness(args: Any) -> int:
    result = run_freshness(
        args.nodes,
        args.seconds,
        args.warmup_s,
        args.partitions,
        Path(args.stack_dir) if args.stack_dir else None,
    )
    if args.json:
        print(json.dumps(result))
    else:
        f, b = result["freshness"], result["baseline_consumer"]
        print(
            f"freshness (broker ack -> visible to the portal): p50 {f['p50_s']} s, "
            f"p99 {f['p99_s']} s, max {f['max_s']} s; a plain consumer: p99 {b['p99_s']} s; "
            f"{result['achieved_reports_per_s']} reports/s; exact: {result['exact']}"
        )
    return 0 if result["exact"] and not result["reports_unseen"] else 1
