"""Running the pipeline's parts as real processes, for the demo and the end-to-end tests:
a worker subprocess, a fleet published to the broker, and totals read back from ClickHouse.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.fleet import FleetSpec, fleet_reports
from agent.publisher import ReportPublisher, publish_all
from agent.totals import EmittedTotals
from core.units import US_PER_SECOND
from schemas import ReportCodec
from streams.host.settings import WorkerSettings
from warehouse.client import Warehouse
from warehouse.totals import differences, grain_differences, ledger_totals


def worker_argv(settings: WorkerSettings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "meter",
        "worker",
        "--bootstrap",
        settings.bootstrap,
        "--topic",
        settings.topic,
        "--dlq-topic",
        settings.dlq_topic,
        "--app-id",
        settings.app_id,
        "--partitions",
        str(settings.partitions),
        "--clickhouse-url",
        settings.clickhouse.to_url(),
        "--datadir",
        str(settings.datadir),
        "--lateness-s",
        str(settings.processor.lateness_us / US_PER_SECOND),
        "--batch-messages",
        str(settings.batch_max_messages),
        "--processing-threads",
        str(settings.processing_threads),
        "--snapshot-interval-s",
        str(settings.snapshot_interval_s),
        "--session-timeout-s",
        str(settings.session_timeout_s),
        *(["--metrics-port", str(settings.metrics_port)] if settings.metrics_port else []),
        *([] if settings.hot_path else ["--plain"]),
    ]


@dataclass
class WorkerProcess:
    """A Faust worker in a child process, logging to ``log_path``."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, settings: WorkerSettings, log_path: Path) -> WorkerProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                worker_argv(settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return cls(proc, log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def fleet_frames(
    spec: FleetSpec, totals: EmittedTotals, codec: ReportCodec | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, framed value) for every report of ``spec``, adding each to ``totals``."""
    codec = codec or ReportCodec()
    for report in fleet_reports(spec):
        totals.add_report(report)
        yield report["node_id"].encode(), codec.encode(report)


def publish_fleet(
    spec: FleetSpec,
    bootstrap: str,
    topic: str,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[EmittedTotals, dict[int, int]]:
    """Publish the whole fleet; returns what it emitted and the acknowledged end offsets."""
    totals = EmittedTotals()
    with ReportPublisher(bootstrap, topic) as publisher:
        publish_all(publisher, fleet_frames(spec, totals), on_progress)
        return totals, dict(publisher.end_offsets)


def totals_exact(emitted: EmittedTotals, warehouse: Warehouse) -> bool:
    """Whether the rollups at every grain and the ledger equal what was emitted, key by key."""
    by_grain = grain_differences(warehouse, emitted.by_key)
    return not any(by_grain.values()) and not differences(emitted.by_key, ledger_totals(warehouse))
