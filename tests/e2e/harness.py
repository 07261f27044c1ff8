"""Helpers for driving real workers and publishers in the end-to-end tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from agent.publisher import ReportPublisher
from agent.totals import EmittedTotals
from meter.runner import WorkerProcess
from schemas import ReportCodec
from streams.host.progress import wait_until_consumed
from streams.host.settings import WorkerSettings
from tests.factories import EXACT_AT_EVERY_GRAIN
from warehouse.client import Warehouse
from warehouse.totals import differences, grain_differences, ledger_totals


class BackgroundPublisher(threading.Thread):
    """Publishes (key, value) frames in a thread, ``per_second`` at most, acks=all."""

    def __init__(
        self,
        settings: WorkerSettings,
        frames: Iterable[tuple[bytes, bytes]],
        per_second: float | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.frames = frames
        self.per_second = per_second
        self.end_offsets: dict[int, int] = {}
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with ReportPublisher(self.settings.bootstrap, self.settings.topic) as publisher:
                started = time.monotonic()
                for key, value in self.frames:
                    publisher.publish(key, value)
                    self.sent += 1
                    if self.per_second:
                        ahead = self.sent / self.per_second - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
                publisher.flush()
                self.end_offsets = dict(publisher.end_offsets)
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def finish(self, timeout_s: float = 300.0) -> dict[int, int]:
        self.join(timeout_s)
        assert not self.is_alive(), "publisher did not finish"
        if self.error:
            raise self.error
        return self.end_offsets


def encode_all(reports: Iterable[dict], totals: EmittedTotals | None = None):
    codec = ReportCodec()
    for report in reports:
        if totals is not None:
            totals.add_report(report)
        yield report["node_id"].encode(), codec.encode(report)


def drain(
    settings: WorkerSettings,
    end_offsets: dict[int, int],
    workers: list[WorkerProcess],
    timeout_s: float = 240.0,
) -> None:
    """Wait until the group committed ``end_offsets``; fail fast if every worker died."""

    def check(done: int, target: int) -> None:
        if not any(w.alive() for w in workers):
            logs = "\n".join(Path(w.log_path).read_text()[-2000:] for w in workers)
            raise AssertionError(f"all workers exited; logs:\n{logs}")

    wait_until_consumed(
        settings.bootstrap, settings.app_id, settings.topic, end_offsets, timeout_s, check
    )


def meter_backlog(
    settings: WorkerSettings,
    end_offsets: dict[int, int],
    log_path: Path,
    warehouse: Warehouse,
    emitted: EmittedTotals,
) -> None:
    """One worker meters the topic up to ``end_offsets`` and stops; totals must be exact."""
    worker = WorkerProcess.start(settings, log_path)
    try:
        drain(settings, end_offsets, [worker])
    finally:
        worker.stop()
    assert_exact(warehouse, emitted)
    assert_json_lines(log_path)


def assert_json_lines(log_path: Path) -> None:
    """A worker logging to a file writes one JSON object per line, its own lines and
    Faust's alike (core/logs.py)."""
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # a plain-text line fails here
    assert all({"ts", "level", "logger", "msg"} <= d.keys() for d in docs)
    loggers = {d["logger"].split(".")[0] for d in docs}
    assert {"streams", "faust"} <= loggers or {"streams", "mode"} <= loggers, loggers


def assert_exact(warehouse: Warehouse, emitted: EmittedTotals) -> None:
    """Rollups at every grain (with adjustments) and the ledger equal what was emitted,
    exactly."""
    assert grain_differences(warehouse, emitted.by_key) == EXACT_AT_EVERY_GRAIN, "rollups differ"
    assert differences(emitted.by_key, ledger_totals(warehouse)) == [], "ledger differs"


def progress(warehouse: Warehouse) -> dict[str, int]:
    """Counters summed over partitions from the stored partition states."""
    row = warehouse.execute(
        "SELECT sum(accepted_reports), sum(accepted_samples), sum(duplicate_reports), "
        "sum(late_reports), sum(rejected_reports), sum(open_gaps) FROM pipeline_progress"
    )[0]
    names = (
        "accepted_reports",
        "accepted_samples",
        "duplicate_reports",
        "late_reports",
        "rejected_reports",
        "open_gaps",
    )
    return dict(zip(names, map(int, row), strict=True))
