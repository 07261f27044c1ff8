"""The worker's batch handler, with an in-memory warehouse and dead-letter topic: a batch's
partitions processed side by side give what one thread gives, and a partition that fails
fails the batch only after every other partition's part has finished."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from agent.fleet import FleetSpec, build_nodes, node_report
from schemas import ReportCodec
from streams.host.app import BatchHandler
from streams.host.settings import WorkerSettings
from streams.output.sink import LATEST_SNAPSHOT_SQL, PROGRESS_SQL
from warehouse.client import ClickHouseSettings

PARTITIONS = 6
NOW_MS = 1_900_000_000_000  # after the fleet's simulated time: nothing is "far future"


class FreshWarehouse:
    """Every partition was never processed: ``load_state`` finds no stored state."""

    def execute(self, query: str, params: Any = None) -> list[tuple[Any, int]]:
        # No snapshot (no blob, none found), and no progress (none found, offset 0).
        assert query in (LATEST_SNAPSHOT_SQL, PROGRESS_SQL), query
        return [("", 0)] if query == LATEST_SNAPSHOT_SQL else [(0, 0)]


class AckingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, key: bytes, value: bytes, headers: Any) -> asyncio.Future[None]:
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _fleet_batches(batches: int) -> list[dict[int, list[SimpleNamespace]]]:
    """Reports of 15 nodes over the partitions (3 in each of the first three, 2 in each of
    the others), one node's every other report garbage, cut into ``batches`` batches."""
    spec = FleetSpec(nodes=15, gpus_per_node=2, tenants=3, reports_per_node=2 * batches)
    codec = ReportCodec()
    nodes = build_nodes(spec)
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    out = []
    for b in range(batches):
        batch: dict[int, list[SimpleNamespace]] = {}
        for seq in (2 * b, 2 * b + 1):
            for n, node in enumerate(nodes):
                p = n % PARTITIONS
                value = codec.encode(node_report(spec, node, seq))
                if n == 3 and seq % 2:
                    value = b"\x00garbage"
                batch.setdefault(p, []).append(
                    SimpleNamespace(offset=offsets[p], timestamp=NOW_MS, key=b"k", value=value)
                )
                offsets[p] += 1
        out.append(batch)
    return out


def _settings(threads: int) -> WorkerSettings:
    return WorkerSettings(
        bootstrap="127.0.0.1:1",
        topic="usage",
        clickhouse=ClickHouseSettings(),
        partitions=PARTITIONS,
        processing_threads=threads,
    )


def _run(threads: int) -> tuple[list[Any], list[bytes], dict[int, int]]:
    dlq = AckingDeadLetters()
    handler = BatchHandler(_settings(threads), FreshWarehouse(), dlq)  # type: ignore[arg-type]

    async def go() -> list[Any]:
        seen = []
        for batch in _fleet_batches(4):
            for outcome, row in await handler.prepare(batch):
                seen.append(
                    (
                        outcome.partition,
                        bytes(outcome.ledger),
                        sorted((r.key, r.sums, r.version) for r in outcome.rollups),
                        [(r.reason, r.message.offset) for r in outcome.rejections],
                        row.progress,  # the snapshot's bytes are compared through these
                    )
                )
        return seen

    seen = asyncio.run(go())
    applied = {p: view.applied_offset for p, view in handler.views.items()}
    return seen, dlq.sent, applied


def test_partitions_processed_side_by_side_match_one_thread() -> None:
    one, one_dead, one_applied = _run(1)
    many, many_dead, many_applied = _run(4)
    assert many == one
    # Each partition's view is its own: 4 batches of 2 reports from each of its nodes.
    expected = {p: 4 * 2 * (3 if p < 3 else 2) - 1 for p in range(PARTITIONS)}
    assert one_applied == many_applied == expected
    assert len(one) == 4 * PARTITIONS
    assert one_dead == many_dead == [b"\x00garbage"] * 4
    assert all(ledger for _, ledger, *_ in one)


def test_a_failing_partition_fails_the_batch_after_the_others_finish() -> None:
    handler = BatchHandler(_settings(4), FreshWarehouse(), AckingDeadLetters())  # type: ignore[arg-type]
    finished: list[int] = []
    lock = threading.Lock()

    class Failing:
        def __init__(self, partition: int) -> None:
            self.state = SimpleNamespace(topic="usage", partition=partition)

        def process(self, block: Any) -> Any:
            raise RuntimeError("corrupt")

    class Slow(Failing):
        def process(self, block: Any) -> Any:
            time.sleep(0.3)
            with lock:
                finished.append(self.state.partition)
            raise RuntimeError("slow, then failing too")

    handler.processors = {0: Failing(0), 1: Slow(1), 2: Slow(2)}  # type: ignore[dict-item]
    batch = {
        p: [SimpleNamespace(offset=0, timestamp=NOW_MS, key=b"k", value=b"v")] for p in range(3)
    }
    with pytest.raises(RuntimeError, match="corrupt"):
        asyncio.run(handler.prepare(batch))
    assert sorted(finished) == [1, 2]


class RefusingLargeDeadLetters(AckingDeadLetters):
    """A broker whose dead-letter topic refuses records over ``limit`` bytes on delivery,
    as Kafka does for a topic whose ``max.message.bytes`` is below the pipeline's."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.headers: list[dict[str, str]] = []

    async def send(self, key: bytes, value: bytes, headers: Any) -> asyncio.Future[None]:
        from aiokafka.errors import MessageSizeTooLargeError

        from streams.output.dlq import parse_headers

        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(value) > self.limit:
            done.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append(value)
            self.headers.append(parse_headers(headers))
            done.set_result(None)
        return done


def test_a_dead_letter_the_broker_refuses_as_too_large_is_sent_as_a_stub():
    big_garbage = b"\x00" + bytes(range(256)) * 1024  # 256 kB that is no report
    batch = {0: [SimpleNamespace(offset=0, timestamp=NOW_MS, key=b"k", value=big_garbage)]}
    dlq = RefusingLargeDeadLetters(limit=100_000)
    handler = BatchHandler(_settings(1), FreshWarehouse(), dlq)  # type: ignore[arg-type]
    written = asyncio.run(handler.prepare(batch))
    [(outcome, _)] = written
    assert [r.reason for r in outcome.rejections] == ["bad_magic"]
    [stub] = dlq.sent
    assert big_garbage.startswith(stub) and len(stub) < dlq.limit
    assert dlq.headers[0]["payload"] == "truncated"
    assert dlq.headers[0]["payload_size"] == str(len(big_garbage))


def test_a_partition_state_is_stored_with_its_first_batch_then_once_an_interval():
    """Storing a partition's whole state costs far more than processing its batch
    (docs/PERFORMANCE.md), so it is stored with the partition's first batch, then when
    ``snapshot_interval_s`` has passed, one partition a batch, the longest unstored first.
    The offsets a write allows to be committed are where those stored states resume."""
    from dataclasses import replace

    now_s = [0.0]
    settings = replace(_settings(2), snapshot_interval_s=10.0)
    handler = BatchHandler(settings, FreshWarehouse(), AckingDeadLetters(), clock=lambda: now_s[0])  # type: ignore[arg-type]
    written_by_sink: list[Any] = []
    handler.sink.write_many = written_by_sink.append  # type: ignore[method-assign]

    async def go() -> tuple[list[list[int]], list[dict[int, int]]]:
        stored, resume = [], []
        for at_s, batch in zip((0.0, 4.0, 11.0, 12.0), _fleet_batches(4), strict=True):
            now_s[0] = at_s
            written = await handler.prepare(batch)
            stored.append(sorted(o.partition for o, row in written if row.snapshot))
            resume.append(dict(await handler.write(written)))
        return stored, resume

    stored, resume = asyncio.run(go())
    assert stored == [list(range(PARTITIONS)), [], [0], [1]]
    # Reports per batch: 2 from each node; 3 nodes in partitions 0-2, 2 in the others.
    per_batch = {p: 2 * (3 if p < 3 else 2) for p in range(PARTITIONS)}
    first = dict(per_batch)
    assert resume[0] == resume[1] == first
    assert resume[2] == {**first, 0: 3 * per_batch[0]}
    assert resume[3] == {**first, 0: 3 * per_batch[0], 1: 4 * per_batch[1]}
    assert len(written_by_sink) == 4

    async def idle() -> list[list[tuple[int, int]]]:
        # Idle: every lagging snapshot at once; then none.
        stored = []
        while (job := await handler.checkpoint()) is not None:
            assert all(row.snapshot and not o.ledger_rows and not o.rollups for o, row in job)
            resume = await handler.write(job)
            stored.append([(o.partition, resume[o.partition]) for o, _ in job])
        return stored

    lagging = [0, 2, 3, 4, 5]  # 0 was stored at 11 s; 1 with the last batch, so it is current
    assert asyncio.run(idle()) == [[(p, 4 * per_batch[p]) for p in lagging]]
    assert handler.resume_at == {p: 4 * per_batch[p] for p in range(PARTITIONS)}
