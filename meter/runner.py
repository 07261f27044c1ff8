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
from typing import Any

from agent.fleet import FleetSpec, fleet_reports
from agent.publisher import ReportPublisher, publish_all
from agent.totals import COUNTERS, EmittedTotals, TotalsKey
from meter.units import US_PER_MINUTE, US_PER_SECOND
from schemas import ReportCodec
from streams.settings import WorkerSettings
from warehouse.client import Warehouse


def worker_argv(settings: WorkerSettings) -> list[str]:
    return [
        sys.executable, "-m", "meter", "worker",
        "--bootstrap", settings.bootstrap,
        "--topic", settings.topic,
        "--dlq-topic", settings.dlq_topic,
        "--app-id", settings.app_id,
        "--partitions", str(settings.partitions),
        "--clickhouse-url", settings.clickhouse.to_url(),
        "--datadir", str(settings.datadir),
        "--lateness-s", str(settings.processor.lateness_us / US_PER_SECOND),
        "--batch-messages", str(settings.batch_max_messages),
        "--processing-threads", str(settings.processing_threads),
        "--session-timeout-s", str(settings.session_timeout_s),
        *(["--metrics-port", str(settings.metrics_port)] if settings.metrics_port else []),
        *([] if settings.hot_path else ["--plain"]),
    ]  # fmt: skip


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


def warehouse_totals(warehouse: Warehouse) -> dict[TotalsKey, dict[str, int]]:
    """The finance view's totals, keyed like :class:`EmittedTotals`."""
    rows = warehouse.execute(
        "SELECT tenant_id, sku, cluster, toUInt32(window_start), "
        f"{', '.join(COUNTERS)}, sample_count FROM usage_by_minute"
    )
    names = (*COUNTERS, "sample_count")
    return {
        (t, s, c, int(w) * US_PER_SECOND): dict(zip(names, map(int, rest), strict=True))
        for t, s, c, w, *rest in rows
    }


def ledger_totals(
    warehouse: Warehouse, window_us: int = US_PER_MINUTE
) -> dict[TotalsKey, dict[str, int]]:
    """The ledger summed per (tenant, sku, cluster, window of the tick start).

    Equal to the rollups when ticks do not straddle windows (agents align them).
    """
    rows = warehouse.execute(
        "SELECT tenant_id, sku, cluster, intDiv(tick_start_us, %(w)s) * %(w)s AS window_us, "
        f"{', '.join(f'sum({c})' for c in COUNTERS)}, count() "
        "FROM usage_ledger GROUP BY tenant_id, sku, cluster, window_us",
        {"w": window_us},
    )
    names = (*COUNTERS, "sample_count")
    return {
        (t, s, c, int(w)): dict(zip(names, map(int, rest), strict=True))
        for t, s, c, w, *rest in rows
    }


def differences(
    emitted: dict[TotalsKey, dict[str, int]], stored: dict[TotalsKey, dict[str, int]]
) -> list[dict[str, Any]]:
    """Every key and counter where the two sides differ (missing counts as zero)."""
    out = []
    zero = dict.fromkeys((*COUNTERS, "sample_count"), 0)
    for key in sorted(emitted.keys() | stored.keys()):
        a, b = emitted.get(key, zero), stored.get(key, zero)
        for name in zero:
            if a[name] != b[name]:
                out.append({"key": key, "counter": name, "emitted": a[name], "stored": b[name]})
    return out


def totals_exact(emitted: EmittedTotals, warehouse: Warehouse) -> bool:
    """Whether the rollups and the ledger both equal what was emitted, key by key."""
    return not differences(emitted.by_key, warehouse_totals(warehouse)) and not differences(
        emitted.by_key, ledger_totals(warehouse)
    )
