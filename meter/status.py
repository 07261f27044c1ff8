"""``meter status``: what an operator asks first. Per partition progress, duplicates, late
and rejected reports, open seq gaps and the nodes gone silent (from the warehouse), and
lag (from the workers' Prometheus endpoints, which see the fetch high watermark).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from core.errors import ConfigError, MeterError
from warehouse.client import Warehouse

_PROGRESS_COLUMNS = (
    "topic",
    "partition",
    "applied_offset",
    "accepted_reports",
    "accepted_samples",
    "duplicate_reports",
    "late_reports",
    "rejected_reports",
    "open_gaps",
    "windows_closed_before",
)


def check_metrics_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"--metrics-url {url!r} must be a URL such as http://worker-host:9108/metrics"
        )
    return url


def scrape_lag(metrics_urls: Sequence[str]) -> dict[tuple[str, int], int]:
    """``meter_partition_lag`` per (topic, partition) from each worker's /metrics."""
    lag: dict[tuple[str, int], int] = {}
    for url in metrics_urls:  # checked at the edge (check_metrics_url)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode("utf-8")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MeterError(
                f"cannot read worker metrics at {url} ({reason}): is the worker running with "
                "--metrics-port, and is the URL right?"
            ) from exc
        for line in text.splitlines():
            if not line.startswith("meter_partition_lag{"):
                continue
            labels, value = line[len("meter_partition_lag{") :].rsplit("} ", 1)
            parsed = dict(part.split("=", 1) for part in labels.split(","))
            key = (parsed["topic"].strip('"'), int(parsed["partition"].strip('"')))
            lag[key] = int(value)
    return lag


def collect(
    warehouse: Warehouse, metrics_urls: Sequence[str] = (), silent_after_s: int = 300
) -> dict[str, Any]:
    """What ``meter status`` shows; a node is silent when its reports stopped arriving
    ``silent_after_s`` before the latest report of any node (the pipeline's own clock, so
    a stopped worker does not make every node look silent)."""
    progress = [
        dict(zip(_PROGRESS_COLUMNS, row, strict=True))
        for row in warehouse.execute(
            f"SELECT {', '.join(_PROGRESS_COLUMNS)} FROM pipeline_progress "
            "ORDER BY topic, partition"
        )
    ]
    lag = scrape_lag(metrics_urls) if metrics_urls else {}
    for row in progress:
        row["lag"] = lag.get((row["topic"], row["partition"]))
    gaps = warehouse.execute(
        "SELECT node_id, boot_id, first_missing, last_missing, missing_reports, first_seen "
        "FROM open_seq_gaps ORDER BY first_seen, node_id LIMIT 20"
    )
    rejected = warehouse.execute(
        "SELECT reason, reports FROM rejected_by_reason ORDER BY reports DESC"
    )
    ((nodes, latest),) = warehouse.execute("SELECT count(), max(last_seen_at) FROM node_status")
    silent = []
    if nodes:
        silent = warehouse.execute(
            "SELECT node_id, boot_id, last_seen_at, last_seq, open_gaps FROM node_status "
            "WHERE last_seen_at < %(before)s ORDER BY last_seen_at, node_id LIMIT 20",
            {"before": latest - timedelta(seconds=silent_after_s)},
        )
    return {
        "partitions": progress,
        "open_gaps": gaps,
        "rejected": rejected,
        "nodes": int(nodes),
        "latest_seen": latest,
        "silent": silent,
        "silent_after_s": silent_after_s,
    }


def render(status: dict[str, Any]) -> list[str]:
    head = (
        f"{'topic':<28} {'part':>4} {'applied':>10} {'lag':>7} {'reports':>10} "
        f"{'samples':>12} {'dup':>7} {'late':>6} {'rejected':>8} {'gaps':>5}  final before"
    )
    lines = [head, "-" * len(head)]
    for p in status["partitions"]:
        lag = "?" if p["lag"] is None else str(p["lag"])
        lines.append(
            f"{p['topic']:<28} {p['partition']:>4} {p['applied_offset']:>10} {lag:>7} "
            f"{p['accepted_reports']:>10,} {p['accepted_samples']:>12,} "
            f"{p['duplicate_reports']:>7,} {p['late_reports']:>6,} "
            f"{p['rejected_reports']:>8,} {p['open_gaps']:>5}  "
            f"{_closed(p['windows_closed_before'])}"
        )
    if not status["partitions"]:
        lines.append("(no partition has been processed yet)")
    if any(p["lag"] is None for p in status["partitions"]):
        lines.append(
            "lag ?: unknown, the warehouse does not hold the broker's offsets; pass "
            "each worker's --metrics-url http://HOST:PORT/metrics to show it"
        )
    lines.append("")
    if status["open_gaps"]:
        lines.append("open seq gaps (possible data loss), oldest first:")
        for node, boot, lo, hi, n, first_seen in status["open_gaps"]:
            lines.append(f"  {node} boot {boot[:8]} seqs {lo}..{hi} ({n}) since {first_seen}")
    else:
        lines.append("open seq gaps: none")
    rejected = ", ".join(f"{reason}={n}" for reason, n in status["rejected"]) or "none"
    lines.append(f"rejected reports by reason: {rejected}")
    lines.extend(_nodes(status))
    return lines


def _nodes(status: dict[str, Any]) -> list[str]:
    if not status.get("nodes"):
        return ["nodes: none heard from yet"]
    after_min = status["silent_after_s"] / 60
    head = (
        f"nodes: {status['nodes']:,} heard from, the latest report at "
        f"{status['latest_seen']:%Y-%m-%d %H:%M:%S} UTC"
    )
    if not status["silent"]:
        return [f"{head}; none silent for {after_min:g} min before it"]
    lines = [
        f"{head}; silent for more than {after_min:g} min before it (oldest first, 20 at most):"
    ]
    for node, boot, seen, seq, gaps in status["silent"]:
        lines.append(
            f"  {node} boot {boot[:8]} last heard {seen:%Y-%m-%d %H:%M:%S} UTC, "
            f"seq {seq}, open gaps {gaps}"
        )
    return lines


def _closed(when: Any) -> str:
    """Before when the partition's windows are final (statements wait for the month's end)."""
    if when.year == 1970:  # no window closed yet (or a state written before migration 0009)
        return "-"
    return str(when.strftime("%Y-%m-%d %H:%M:%S UTC"))
