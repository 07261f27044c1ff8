"""The agent's main loop: tick, attribute, build reports, spool them; a thread sends.

Ticks are aligned to the wall clock (boundaries at multiples of the tick length since the
epoch, so every node's ticks line up with the minute windows); waiting uses the monotonic
clock, so a clock step never makes a tick negative. The first tick after a start is
partial: [start, next boundary). On SIGTERM/SIGINT the current tick is closed at that
moment, its report is spooled, and, if the broker was answering, the spool is drained
within the stop budget (``drain_s``, 8 s in all); what is left stays spooled for the next
start. A sender blocked on an unreachable broker is not waited for (the spool holds all it
had), so the agent always ends within 10 s.

Identity: ``boot_id`` is a fresh UUID per start; ``seq`` continues from the spool's
persisted counter (see ``agent/spool.py``), so it never repeats for the node.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from agent.allocation import AllocationFile, AllocationSource, Assignment, Attribution
from agent.collectors import Collector
from agent.config import AgentConfig
from agent.errors import AllocationError
from agent.metrics import AgentMetrics, serve
from agent.report import OpenReport, tick_samples
from agent.sender import SpoolSender, broker_unreachable, kafka_producer
from agent.spool import Spool
from schemas import ReportCodec

log = logging.getLogger("meter.agent")

# Allocation changes without since_us are placed when seen: look at least this often.
ALLOCATION_POLL_S = 1.0
STOP_BUDGET_S = 8.0  # SIGTERM to exit, sending included: within the 10 s promised
SENDER_JOIN_S = 2.0
EXIT_SENDER_FAILED = 70  # EX_SOFTWARE: restart it (a supervisor does); nothing spooled is lost


def wall_us() -> int:
    return time.time_ns() // 1_000


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        collector: Collector,
        allocations: AllocationSource,
        spool: Spool,
        metrics: AgentMetrics,
        on_spooled: Callable[[], None] = lambda: None,
        clock_us: Callable[[], int] = wall_us,
    ) -> None:
        self.config = config
        self.collector = collector
        self.allocations = allocations
        self.spool = spool
        self.metrics = metrics
        self.on_spooled = on_spooled
        self.clock_us = clock_us
        self.codec = ReportCodec()
        self.boot_id = str(uuid.uuid4())
        self.units = collector.units()
        self._assignments: Mapping[str, Assignment] = {}
        self._reported_issues: set[tuple[str, str]] = set()

    def run(self, stop: threading.Event) -> None:
        cfg = self.config
        start = self.clock_us()
        attribution = Attribution(self.units, start)
        self._observe(attribution, start, start)
        tick_start = start
        report = OpenReport(start, start)
        log.info(
            "agent started",
            extra={
                "fields": {
                    "boot_id": self.boot_id,
                    "next_seq": self.spool.peek_seq(),
                    "units": [u.uuid for u in self.units],
                    "spooled": len(self.spool),
                }
            },
        )
        while True:
            boundary = (tick_start // cfg.tick_us + 1) * cfg.tick_us
            stopping = self._wait_until(boundary, stop, attribution, tick_start)
            tick_end = boundary if not stopping else min(boundary, self.clock_us())
            if tick_end > tick_start:
                self._tick(attribution, report, tick_start, tick_end)
                tick_start = tick_end
            if report.samples and (stopping or tick_end % cfg.publish_us == 0):
                self._publish(report)
                report = OpenReport(tick_end, tick_end)
            if stopping:
                return

    def _wait_until(
        self, boundary_us: int, stop: threading.Event, attribution: Attribution, floor_us: int
    ) -> bool:
        """Sleep until the wall clock reaches ``boundary_us``; True if asked to stop."""
        while True:
            if stop.is_set():
                return True
            remaining_s = (boundary_us - self.clock_us()) / 1e6
            if remaining_s <= 0:
                return False
            if stop.wait(min(remaining_s, ALLOCATION_POLL_S)):
                return True
            self._observe(attribution, min(self.clock_us(), boundary_us), floor_us)

    def _observe(
        self, attribution: Attribution, seen_us: int, floor_us: int, tick: bool = False
    ) -> None:
        """Read the allocation source; a refusal is logged and counted once per tick (the
        polls between ticks keep the last good allocation quietly)."""
        try:
            self._assignments = self.allocations.current()
        except (AllocationError, OSError, UnicodeDecodeError) as exc:
            if tick:
                self.metrics.allocation_refused()
                log.error(
                    "allocation file refused; the last good allocation stays in force",
                    extra={"fields": {"error": str(exc)}},
                )
        attribution.observe(self._assignments, seen_us, floor_us)

    def _tick(self, attribution: Attribution, report: OpenReport, start: int, end: int) -> None:
        cpu_started = time.thread_time()
        readings = self.collector.read_tick(start, end)
        self._observe(attribution, end, start, tick=True)
        for reading in readings.readings:
            pieces = attribution.pieces(reading.unit.uuid, start, end)
            report.samples.extend(tick_samples(reading, pieces, start, end))
        report.end_us = end
        for issue in readings.issues:
            if (issue.call, issue.unit) not in self._reported_issues:
                self._reported_issues.add((issue.call, issue.unit))
                log.warning(
                    "collector could not read a value (logged once per call and unit)",
                    extra={
                        "fields": {"call": issue.call, "unit": issue.unit, "detail": issue.detail}
                    },
                )
        self.metrics.tick(time.thread_time() - cpu_started, [i.call for i in readings.issues])

    def _publish(self, report: OpenReport) -> None:
        cpu_started = time.thread_time()
        seq = self.spool.peek_seq()
        doc = report.to_report(self.config.node_id, self.boot_id, seq, self.config.cluster)
        frame = self.codec.encode(doc)
        fields: dict[str, Any] = {
            "seq": seq,
            "samples": len(report.samples),
            "bytes": len(frame),
            "interval_start_us": report.start_us,
            "interval_end_us": report.end_us,
        }
        kept = self.spool.put(seq, frame)
        if kept:
            if self.spool.alarm:
                log.warning(
                    "spool past its alarm level: the broker is not taking reports",
                    extra={
                        "fields": {
                            **fields,
                            "spool_bytes": self.spool.bytes_used,
                            "spool_max_bytes": self.spool.max_bytes,
                        }
                    },
                )
        else:
            log.error(
                "spool full: report dropped; the pipeline will show its seq as a gap",
                extra={"fields": {**fields, "dropped_total": self.spool.dropped_count()}},
            )
        self.metrics.set_spool(len(self.spool), self.spool.bytes_used, self.spool.alarm)
        self.metrics.spooled(kept, time.thread_time() - cpu_started)
        self.on_spooled()


def build_collector(config: AgentConfig) -> Collector:
    if config.collector == "simulated":
        from agent.collectors.simulated import SimulatedCollector

        return SimulatedCollector(
            config.node_id, config.simulated_gpus, config.simulated_sku, config.simulated_seed
        )
    from agent.collectors.nvml import NvmlCollector

    return NvmlCollector(sku_names=config.sku_names)


def announce_broker(config: AgentConfig, spool: Spool) -> None:
    """Say at start whether the broker answers: an agent that cannot reach it still
    samples and spools (nothing is lost while the spool has room), and says so."""
    why = broker_unreachable(config.broker)
    if why is None:
        log.info("broker reachable", extra={"fields": {"broker": config.broker}})
        return
    log.warning(
        "broker unreachable at start: spool-only until it answers (reports are kept, in "
        "order, and sent when it does)",
        extra={
            "fields": {
                "broker": config.broker,
                "error": why,
                "spooled": len(spool),
                "spool_max_bytes": spool.max_bytes,
            }
        },
    )


def run_agent(config: AgentConfig, drain_s: float = STOP_BUDGET_S) -> int:
    collector = build_collector(config)
    spool = Spool(
        config.spool_dir, config.spool_max_bytes, config.spool_alarm_fraction, config.spool_fsync
    )
    metrics = AgentMetrics(config.node_id)
    metrics.spool_max_bytes = spool.max_bytes
    server = (
        serve(metrics, config.metrics_port, config.metrics_host) if config.metrics_port else None
    )
    stop = threading.Event()
    sender = SpoolSender(
        spool,
        config.topic,
        config.node_id.encode(),
        metrics,
        lambda: kafka_producer(config.broker, config.broker_auth),
        on_death=lambda _: stop.set(),
    )
    agent = Agent(
        config,
        collector,
        AllocationFile(config.allocation_path, collector.units()),
        spool,
        metrics,
        on_spooled=sender.wake.set,
    )
    if threading.current_thread() is threading.main_thread():  # only it may own signals
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    announce_broker(config, spool)
    sender.start()
    try:
        agent.run(stop)
    finally:
        deadline = time.monotonic() + drain_s
        sender.stop()
        sender.join(timeout=min(SENDER_JOIN_S, drain_s))
        # Drain only through a sender that finished and was not failing: one blocked on an
        # unreachable broker would take the stop past its bound, and the spool keeps all.
        drained = False
        if sender.failure is None and not sender.is_alive() and not sender.failing:
            drained = sender.drain(max(0.0, deadline - time.monotonic()))
        if not sender.is_alive():
            sender.close()
        collector.close()
        if server is not None:
            server.shutdown()
        log.info(
            "agent stopped",
            extra={
                "fields": {
                    "spooled_left": len(spool),
                    "drained": drained,
                    "next_seq": spool.peek_seq(),
                }
            },
        )
    return EXIT_SENDER_FAILED if sender.failure is not None else 0
