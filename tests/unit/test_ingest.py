"""The worker's batch source, with a scripted consumer in place of aiokafka's: the order of
prepare, write, commit and revocation that the exactly-once design relies on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from streams.host.settings import WorkerSettings
from streams.intake import ingest
from warehouse.client import ClickHouseSettings


def _settings(batch_max_messages: int) -> WorkerSettings:
    return WorkerSettings(
        bootstrap="127.0.0.1:1",
        topic="usage",
        clickhouse=ClickHouseSettings(),
        batch_max_messages=batch_max_messages,
        batch_within_s=0.05,
    )


TP0, TP1 = TopicPartition("usage", 0), TopicPartition("usage", 1)


def _records(tp: TopicPartition, first: int, count: int) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(
            topic=tp.topic, partition=tp.partition, offset=o, key=b"k", value=b"v", timestamp=1_000
        )
        for o in range(first, first + count)
    ]


class ScriptedConsumer:
    """Hands out the scripted batches, then revokes partition 1 (unless told not to), then
    idles. A batch "revoke" revokes partition 1 inside that fetch, as a rebalance begun
    while the worker waits for records does."""

    def __init__(self, log: list[str], batches: list, revoke_when_idle: bool = True) -> None:
        self.log, self.batches = log, batches
        self.listener = None
        self.revoke_when_idle = revoke_when_idle

    def subscribe(self, topics, listener):
        self.listener = listener

    async def start(self):
        pass

    async def stop(self):
        self.log.append("stop")

    def highwater(self, tp):
        return None

    async def getmany(self, timeout_ms, max_records):
        await asyncio.sleep(0)  # a fetch yields to the loop, as a real one does
        if self.batches and self.batches[0] == "revoke":
            self.batches.pop(0)
            await self.listener.on_partitions_revoked([TP1])
            self.log.append("revoked")
        if self.batches:
            batch = self.batches.pop(0)
            assert sum(map(len, batch.values())) <= max_records
            return batch
        if self.listener is not None and self.revoke_when_idle:
            listener, self.listener = self.listener, None
            await listener.on_partitions_revoked([TP1])
            self.log.append("revoked")
        await asyncio.sleep(0.01)
        return {}

    async def commit(self, offsets):
        self.log.append("commit " + ",".join(f"{tp.partition}:{o}" for tp, o in offsets.items()))


async def _nothing_lags() -> None:
    """A checkpoint when every state written is stored: nothing to write."""
    return None


async def _run_until(source: ingest.BatchSource, done, then_s: float = 0.0) -> None:
    """Runs ``source`` until ``done()`` (3 s at most), ``then_s`` longer, then stops it."""
    task = asyncio.create_task(source.run())
    for _ in range(300):
        if done():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(then_s)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_batches_are_written_in_order_committed_after_their_write_and_revocation_waits(
    monkeypatch,
):
    log: list[str] = []
    batches = [{TP0: _records(TP0, 0, 3)}, {TP0: _records(TP0, 3, 2), TP1: _records(TP1, 0, 1)}]
    monkeypatch.setattr(ingest, "AIOKafkaConsumer", lambda **_: ScriptedConsumer(log, batches))

    async def prepare(batch):
        offsets = {p: [m.offset for m in ms] for p, ms in batch.items()}
        log.append(f"prepare {offsets}")
        return offsets

    async def write(job):
        log.append(f"write {job} start")
        await asyncio.sleep(0.05)  # the next batch is prepared meanwhile
        log.append(f"write {job} done")
        return {p: offsets[-1] + 1 for p, offsets in job.items()}  # every state stored

    def forget(partitions):
        log.append(f"forget {sorted(partitions)}")

    async def main():
        source = ingest.BatchSource(_settings(3), prepare, write, forget, checkpoint=_nothing_lags)
        task = asyncio.create_task(source.run())
        while "revoked" not in log:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return source

    source = asyncio.run(main())
    first, second = "{0: [0, 1, 2]}", "{0: [3, 4], 1: [0]}"
    expected = [
        f"prepare {first}",
        f"write {first} start",
        f"write {first} done",
        "commit 0:3",
        f"write {second} start",
        f"write {second} done",
        "commit 0:5,1:1",
        "forget [1]",  # only after the batch in hand was written and committed
        "revoked",
        "stop",
    ]
    assert [line for line in log if not line.startswith(f"prepare {second}")] == expected
    # The second batch was prepared while the first was being written.
    assert log.index(f"write {first} start") < log.index(f"prepare {second}")
    assert log.index(f"prepare {second}") < log.index(f"write {first} done")
    assert source.committed == {0: 5}


def test_a_failed_write_is_never_committed_and_ends_the_run(monkeypatch):
    log: list[str] = []
    batches = [{TP0: _records(TP0, 0, 2)}, {TP0: _records(TP0, 2, 2)}]
    monkeypatch.setattr(ingest, "AIOKafkaConsumer", lambda **_: ScriptedConsumer(log, batches))

    async def prepare(batch):
        return [m.offset for m in batch[0]]

    async def write(job):
        raise OSError(f"ClickHouse is gone while writing {job}")

    source = ingest.BatchSource(
        _settings(2), prepare, write, lambda partitions: None, checkpoint=_nothing_lags
    )
    with pytest.raises(OSError, match=r"writing \[0, 1\]"):
        asyncio.run(source.run())
    assert not any(line.startswith("commit") for line in log)
    assert source.committed == {}


def test_fetches_are_gathered_into_one_batch_up_to_its_size(monkeypatch):
    log: list[str] = []
    fetches = [
        {TP0: _records(TP0, 0, 2)},
        {TP0: _records(TP0, 2, 2)},
        {TP1: _records(TP1, 0, 1)},
        {TP1: _records(TP1, 1, 4)},
    ]
    monkeypatch.setattr(
        ingest, "AIOKafkaConsumer", lambda **_: ScriptedConsumer(log, fetches, False)
    )
    prepared = []

    async def prepare(batch):
        prepared.append({p: [m.offset for m in ms] for p, ms in batch.items()})

    async def write(job):
        return {}

    source = ingest.BatchSource(
        _settings(5), prepare, write, lambda partitions: None, checkpoint=_nothing_lags
    )
    asyncio.run(_run_until(source, lambda: len(prepared) == 2))
    # Five messages make a batch; the next fetch starts the next one.
    assert prepared == [{0: [0, 1, 2, 3], 1: [0]}, {1: [1, 2, 3, 4]}]


def test_records_taken_before_a_rebalance_are_dropped_and_those_after_it_kept(monkeypatch):
    """The next batch is taken while one is processed. A rebalance restarts every partition
    at its committed offset, so what was taken before it must not be processed (it comes
    again), and what is taken after it must be."""
    log: list[str] = []
    fetches = [
        {TP0: _records(TP0, 0, 2)},  # batch 1: taken, then processed
        {TP0: _records(TP0, 2, 1)},  # batch 2 begins while batch 1 is processed ...
        "revoke",  # ... and a rebalance begins before it is full
        {TP0: _records(TP0, 2, 1)},  # the new assignment, from the committed offset
        {TP0: _records(TP0, 3, 1)},
    ]
    monkeypatch.setattr(
        ingest, "AIOKafkaConsumer", lambda **_: ScriptedConsumer(log, fetches, False)
    )
    prepared = []

    async def prepare(batch):
        prepared.append({p: [m.offset for m in ms] for p, ms in batch.items()})
        await asyncio.sleep(0.02)  # the next take runs meanwhile

    async def write(job):
        return {}

    source = ingest.BatchSource(
        _settings(2), prepare, write, lambda partitions: None, checkpoint=_nothing_lags
    )
    asyncio.run(_run_until(source, lambda: len(prepared) == 2, then_s=0.05))
    assert "revoked" in log
    assert prepared == [{0: [0, 1]}, {0: [2, 3]}]


def test_a_batch_taken_before_a_rebalance_that_begins_while_one_is_processed_is_dropped(
    monkeypatch,
):
    log: list[str] = []
    fetches = [
        {TP0: _records(TP0, 0, 2)},
        {TP0: _records(TP0, 2, 2)},  # taken whole while batch 1 is processed
        {TP0: _records(TP0, 2, 2)},  # after the rebalance, again from the committed offset
    ]
    consumer = ScriptedConsumer(log, fetches, False)
    monkeypatch.setattr(ingest, "AIOKafkaConsumer", lambda **_: consumer)
    prepared = []
    revoking: list[asyncio.Task] = []

    async def prepare(batch):
        prepared.append({p: [m.offset for m in ms] for p, ms in batch.items()})
        await asyncio.sleep(0.02)  # batch 2 is taken meanwhile
        if len(prepared) == 1:  # a rebalance begins; it waits for this batch
            revoking.append(asyncio.create_task(consumer.listener.on_partitions_revoked([])))
            await asyncio.sleep(0)

    async def write(job):
        return {}

    async def main():
        source = ingest.BatchSource(
            _settings(2), prepare, write, lambda partitions: None, checkpoint=_nothing_lags
        )
        # Long enough for a third batch, were the stale one prepared.
        await _run_until(source, lambda: len(prepared) >= 2, then_s=0.2)
        await revoking[0]

    asyncio.run(main())
    assert prepared == [{0: [0, 1]}, {0: [2, 3]}]


def test_offsets_are_committed_only_as_far_as_the_stored_states_resume(monkeypatch):
    """Partition states are stored every few seconds, not every batch: a batch's offsets
    are committed only up to where a worker loading the stored state would resume, so the
    messages between are read again after a crash, never skipped."""
    log: list[str] = []
    batches = [
        {TP0: _records(TP0, 0, 1), TP1: _records(TP1, 0, 1)},
        {TP0: _records(TP0, 1, 2)},
        {TP0: _records(TP0, 3, 2)},
    ]
    monkeypatch.setattr(
        ingest, "AIOKafkaConsumer", lambda **_: ScriptedConsumer(log, batches, False)
    )
    # After each write: where the stored states resume (partition 0's state is stored
    # with batches 1 and 3 only; partition 1's with batch 1).
    stored = [{0: 1, 1: 1}, {0: 1, 1: 1}, {0: 5, 1: 1}]
    writes: list[int] = []

    async def prepare(batch):
        return batch

    async def write(job):
        writes.append(len(writes))
        return stored[len(writes) - 1]

    source = ingest.BatchSource(
        _settings(2), prepare, write, lambda partitions: None, checkpoint=_nothing_lags
    )
    asyncio.run(_run_until(source, lambda: len(writes) == 3, then_s=0.05))
    assert len(writes) == 3
    assert [line for line in log if line.startswith("commit")] == ["commit 0:1,1:1", "commit 0:5"]
    assert source.committed == {0: 5, 1: 1}


def test_an_idle_worker_stores_lagging_snapshots_until_its_commits_reach_what_it_wrote(
    monkeypatch,
):
    """Once no records come, the worker stores the snapshots that lag what it has written,
    so the group's committed offsets reach the end of what was read (consumer lag reads 0,
    and whatever waits for the group to finish sees it finish). Here each checkpoint stores
    one partition's, so the rounds repeat until none lags."""
    log: list[str] = []
    batches = [
        {TP0: _records(TP0, 0, 1), TP1: _records(TP1, 0, 1)},
        {TP0: _records(TP0, 1, 1), TP1: _records(TP1, 1, 1)},
    ]
    monkeypatch.setattr(
        ingest, "AIOKafkaConsumer", lambda **_: ScriptedConsumer(log, batches, False)
    )
    stored = {0: 1, 1: 1}  # the first batch's snapshots; the second batch stores none
    checkpoints: list[int] = []

    async def prepare(batch):
        return batch

    async def write(job):
        if isinstance(job, int):  # a checkpoint: that partition's snapshot is now stored
            stored[job] = 2
        return dict(stored)

    async def checkpoint():
        lagging = [p for p in (0, 1) if stored[p] < 2]
        checkpoints.append(lagging[0] if lagging else -1)
        return lagging[0] if lagging else None

    source = ingest.BatchSource(
        _settings(2), prepare, write, lambda partitions: None, checkpoint=checkpoint
    )
    asyncio.run(_run_until(source, lambda: source.committed == {0: 2, 1: 2}, then_s=0.1))
    assert [line for line in log if line.startswith("commit")] == [
        "commit 0:1,1:1",
        "commit 0:2",
        "commit 1:2",
    ]
    assert checkpoints == [0, 1]  # asked each idle round, and not once the commits caught up
