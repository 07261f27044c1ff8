"""Running real agent processes in tests, and reading back what reached the topic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from agent.collectors.simulated import SimulatedCollector
from agent.totals import EmittedTotals
from schemas import ReportCodec
from stack.process import free_port

NODE = "sc1-node-agent-e2e"


@dataclass
class AgentProcess:
    folder: Path
    bootstrap: str
    topic: str
    spool_max_mb: float = 64
    gpus: int = 8
    metrics_port: int = field(default_factory=free_port)
    node_id: str = NODE
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        units = SimulatedCollector(self.node_id, gpus=self.gpus).units()
        self.uuids = [u.uuid for u in units]
        self.write_allocations({u: "aurora-labs" for u in self.uuids[: self.gpus // 2]})
        config = f"""
node_id = "{self.node_id}"
cluster = "sc1"
broker = "{self.bootstrap}"
topic = "{self.topic}"
tick_seconds = 0.25
publish_seconds = 1
spool_dir = "spool"
spool_max_mb = {self.spool_max_mb}
spool_alarm_fraction = 0.5
spool_fsync = "always"
metrics_port = {self.metrics_port}
log_format = "json"

[allocation]
path = "alloc.json"

[collector]
kind = "simulated"
gpus = {self.gpus}
"""
        (self.folder / "agent.toml").write_text(config)

    def write_allocations(self, tenants: dict[str, str], since_us: int | None = None) -> None:
        rows = [
            {"gpu": g, "tenant_id": t, "job_id": f"{t}-job", "since_us": since_us}
            for g, t in tenants.items()
        ]
        tmp = self.folder / "alloc.json.new"
        tmp.write_text(json.dumps({"allocations": rows}))
        tmp.replace(self.folder / "alloc.json")  # as a scheduler should: atomically

    def start(self) -> None:
        log = open(self.folder / "agent.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meter",
                "agent",
                "run",
                "--config",
                str(self.folder / "agent.toml"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name_labels, value = line.rsplit(" ", 1)
                out[name_labels.split("{")[0]] = float(value)
        return out

    def wait_metric(self, name: str, predicate: Any, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        last: float | None = None
        while time.monotonic() < deadline:
            try:
                last = self.metrics()[name]
                if predicate(last):
                    return last
            except OSError:
                pass  # not serving yet
            time.sleep(0.25)
        raise AssertionError(
            f"{name} never satisfied the condition (last {last}); log:\n{self.log_tail()}"
        )

    def state(self) -> dict[str, Any]:
        return json.loads((self.folder / "spool" / "state.json").read_text())

    def log_tail(self, chars: int = 3000) -> str:
        return (self.folder / "agent.log").read_text(errors="replace")[-chars:]

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in (self.folder / "agent.log").read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


@dataclass
class TopicRecord:
    partition: int
    offset: int
    value: bytes
    report: dict[str, Any]


def read_topic(
    bootstrap: str,
    topic: str,
    want_seqs: set[int] | None = None,
    timeout_s: float = 60,
    want_keys: set[tuple[str, int]] | None = None,
) -> list[TopicRecord]:
    """Every record of ``topic`` in (partition, offset) order, once ``want_seqs`` (of one
    node) or ``want_keys`` ((node, seq) of several) are all there."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2_000
    )
    codec = ReportCodec()
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[TopicRecord] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for message in consumer:
                records.append(
                    TopicRecord(
                        message.partition,
                        message.offset,
                        message.value,
                        codec.decode(message.value),
                    )
                )
            if want_seqs is not None and want_seqs <= {r.report["seq"] for r in records}:
                break
            keys = {(r.report["node_id"], r.report["seq"]) for r in records}
            if want_keys is not None and want_keys <= keys:
                break
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def unique_reports(records: list[TopicRecord]) -> list[dict[str, Any]]:
    """First occurrence of each (node, boot, seq), in topic order; repeats must be
    byte-identical."""
    first: dict[tuple[str, str, int], TopicRecord] = {}
    for r in records:
        key = (r.report["node_id"], r.report["boot_id"], r.report["seq"])
        if key in first:
            assert first[key].value == r.value, f"{key} sent twice with different bytes"
        else:
            first[key] = r
    return [r.report for r in first.values()]


def emitted(reports: list[dict[str, Any]]) -> EmittedTotals:
    totals = EmittedTotals()
    totals.add_reports(reports)
    return totals


def end_offsets(records: list[TopicRecord]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends
