"""What a fleet emitted, summed per (tenant, sku, cluster, minute window), to check against.

Computed from the report dicts the agents published, independently of the stream
processor, and written as JSON so a run can be checked after the fact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.units import US_PER_MINUTE, USAGE_COUNTERS
from core.windows import split_counters, window_start

COUNTERS = USAGE_COUNTERS
TotalsKey = tuple[str, str, str, int]  # tenant_id, sku, cluster, window_start_us


class EmittedTotals:
    def __init__(self, window_us: int = US_PER_MINUTE) -> None:
        self.window_us = window_us
        self.by_key: dict[TotalsKey, dict[str, int]] = {}
        self.reports = 0
        self.samples = 0

    def add_report(self, report: Mapping[str, Any]) -> None:
        self.reports += 1
        for sample in report["samples"]:
            self.samples += 1
            tenant, sku = sample["tenant_id"], sample["sku"]
            start, end = sample["tick_start_us"], sample["tick_end_us"]
            values = [sample[c] for c in COUNTERS]
            for w, parts in split_counters(values, start, end, self.window_us):
                row = self._row((tenant, sku, report["cluster"], w))
                for name, part in zip(COUNTERS, parts, strict=True):
                    row[name] += part
            self._row((tenant, sku, report["cluster"], window_start(start, self.window_us)))[
                "sample_count"
            ] += 1

    def _row(self, key: TotalsKey) -> dict[str, int]:
        row = self.by_key.get(key)
        if row is None:
            row = self.by_key[key] = dict.fromkeys((*COUNTERS, "sample_count"), 0)
        return row

    def add_reports(self, reports: Iterable[Mapping[str, Any]]) -> None:
        for report in reports:
            self.add_report(report)

    def per_tenant(self) -> dict[str, dict[str, int]]:
        return per_tenant(self.by_key)

    def to_json(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        rows = [
            {"tenant_id": t, "sku": s, "cluster": c, "window_start_us": w, **row}
            for (t, s, c, w), row in sorted(self.by_key.items())
        ]
        return {
            **(extra or {}),
            "window_us": self.window_us,
            "reports": self.reports,
            "samples": self.samples,
            "totals": rows,
        }

    def write(self, path: Path, extra: Mapping[str, Any] | None = None) -> None:
        path.write_text(json.dumps(self.to_json(extra), indent=1, sort_keys=True) + "\n")


def per_tenant(by_key: Mapping[TotalsKey, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Totals keyed by (tenant, sku, cluster, window) summed per tenant."""
    out: dict[str, dict[str, int]] = {}
    for (tenant, *_), row in by_key.items():
        acc = out.setdefault(tenant, dict.fromkeys(row, 0))
        for name, value in row.items():
            acc[name] += value
    return dict(sorted(out.items()))
