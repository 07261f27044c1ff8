"""From tick readings and holders to report samples, and reports to spool.

A tick whose holder changed is cut at the change: one sample per piece, each with its own
[tick_start_us, tick_end_us), allocated_us equal to its length, and busy, unhealthy and
energy split by time with the cumulative-floor rule (``core.windows``), so the pieces sum
to the tick exactly. Per GPU and tick, Σ allocated_us over tenants (``unallocated``
included) equals the tick length. ``memory_peak_bytes`` is a peak, so each piece carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.allocation import Piece
from agent.collectors import TickReading
from core.windows import split_by_elapsed


def tick_samples(
    reading: TickReading, pieces: list[Piece], start_us: int, end_us: int
) -> list[dict[str, Any]]:
    length = end_us - start_us
    counters = [
        min(reading.busy_us, length),
        length if reading.unhealthy else 0,
        reading.energy_mj,
    ]
    parts = split_by_elapsed(counters, length, [p.end_us - start_us for p in pieces])
    unit = reading.unit
    return [
        {
            "gpu_uuid": unit.uuid,
            "gpu_index": unit.index,
            "sku": unit.sku,
            "tenant_id": piece.holder.tenant_id,
            "job_id": piece.holder.job_id,
            "tick_start_us": piece.start_us,
            "tick_end_us": piece.end_us,
            "allocated_us": piece.end_us - piece.start_us,
            "busy_us": busy,
            "unhealthy_us": unhealthy,
            "energy_mj": energy,
            "memory_peak_bytes": reading.memory_peak_bytes,
        }
        for piece, (busy, unhealthy, energy) in zip(pieces, parts, strict=True)
    ]


@dataclass
class OpenReport:
    """The report being filled: its interval grows tick by tick."""

    start_us: int
    end_us: int
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_report(self, node_id: str, boot_id: str, seq: int, cluster: str) -> dict[str, Any]:
        return {
            "node_id": node_id,
            "boot_id": boot_id,
            "seq": seq,
            "cluster": cluster,
            "interval_start_us": self.start_us,
            "interval_end_us": self.end_us,
            "samples": self.samples,
        }
