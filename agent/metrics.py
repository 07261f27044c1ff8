"""The agent's Prometheus metrics, served on ``metrics_port`` at ``/metrics``."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Send latency buckets, seconds: a healthy local broker answers in milliseconds.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentMetrics:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._lock = threading.Lock()
        self.reports_spooled = 0
        self.reports_sent = 0
        self.reports_dropped = 0
        self.send_failures = 0
        self.spool_reports = 0
        self.spool_bytes = 0
        self.spool_max_bytes = 0
        self.spool_alarm = False
        self.ticks = 0
        self.tick_cpu_s = 0.0
        self.nvml_errors: Counter[str] = Counter()
        self.allocation_errors = 0
        self._latency_counts = [0] * (len(_BUCKETS) + 1)
        self._latency_sum = 0.0

    def sent(self, reports: int, seconds: float) -> None:
        with self._lock:
            self.reports_sent += reports
            i = next((i for i, b in enumerate(_BUCKETS) if seconds <= b), len(_BUCKETS))
            self._latency_counts[i] += 1
            self._latency_sum += seconds

    def spooled(self, kept: bool, cpu_s: float) -> None:
        with self._lock:
            if kept:
                self.reports_spooled += 1
            else:
                self.reports_dropped += 1
            self.tick_cpu_s += cpu_s

    def allocation_refused(self) -> None:
        with self._lock:
            self.allocation_errors += 1

    def send_failed(self) -> None:
        with self._lock:
            self.send_failures += 1

    def set_spool(self, reports: int, used: int, alarm: bool) -> None:
        with self._lock:
            self.spool_reports, self.spool_bytes, self.spool_alarm = reports, used, alarm

    def tick(self, cpu_s: float, nvml_issues: list[str]) -> None:
        with self._lock:
            self.ticks += 1
            self.tick_cpu_s += cpu_s
            self.nvml_errors.update(nvml_issues)

    def render(self) -> str:
        with self._lock:
            node = f'node_id="{self.node_id}"'
            out: list[str] = []

            def metric(name: str, kind: str, help_text: str, value: float, extra: str = "") -> None:
                out.append(f"# HELP {name} {help_text}")
                out.append(f"# TYPE {name} {kind}")
                labels = ",".join(x for x in (node, extra) if x)
                out.append(f"{name}{{{labels}}} {value}")

            metric(
                "meter_agent_reports_spooled_total",
                "counter",
                "Reports written to the spool.",
                self.reports_spooled,
            )
            metric(
                "meter_agent_reports_sent_total",
                "counter",
                "Reports acknowledged by the broker (acks=all).",
                self.reports_sent,
            )
            metric(
                "meter_agent_reports_dropped_total",
                "counter",
                "Reports dropped because the spool was full (seen downstream as seq gaps).",
                self.reports_dropped,
            )
            metric(
                "meter_agent_send_failures_total",
                "counter",
                "Send attempts that failed and will be retried.",
                self.send_failures,
            )
            metric(
                "meter_agent_spool_reports",
                "gauge",
                "Reports in the spool (not yet acknowledged).",
                self.spool_reports,
            )
            metric("meter_agent_spool_bytes", "gauge", "Bytes in the spool.", self.spool_bytes)
            metric(
                "meter_agent_spool_max_bytes", "gauge", "The spool's bound.", self.spool_max_bytes
            )
            metric(
                "meter_agent_spool_alarm",
                "gauge",
                "1 when the spool is past its alarm fraction.",
                int(self.spool_alarm),
            )
            metric("meter_agent_ticks_total", "counter", "Ticks sampled.", self.ticks)
            metric(
                "meter_agent_tick_cpu_seconds_total",
                "counter",
                "CPU time spent sampling, attributing and spooling.",
                self.tick_cpu_s,
            )
            metric(
                "meter_agent_allocation_errors_total",
                "counter",
                "Allocation files refused (the last good one stays in force).",
                self.allocation_errors,
            )
            out.append("# HELP meter_agent_nvml_errors_total NVML calls that failed, by call.")
            out.append("# TYPE meter_agent_nvml_errors_total counter")
            for call, count in sorted(self.nvml_errors.items()):
                out.append(f'meter_agent_nvml_errors_total{{{node},call="{call}"}} {count}')
            out.append("# HELP meter_agent_send_latency_seconds Time to an acknowledged chunk.")
            out.append("# TYPE meter_agent_send_latency_seconds histogram")
            cumulative = 0
            for bound, count in zip((*_BUCKETS, "+Inf"), self._latency_counts, strict=True):
                cumulative += count
                out.append(
                    f'meter_agent_send_latency_seconds_bucket{{{node},le="{bound}"}} {cumulative}'
                )
            out.append(f"meter_agent_send_latency_seconds_sum{{{node}}} {self._latency_sum}")
            out.append(f"meter_agent_send_latency_seconds_count{{{node}}} {cumulative}")
            return "\n".join(out) + "\n"


def serve(metrics: AgentMetrics, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass  # scrapes are not news

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
