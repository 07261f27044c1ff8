"""Collectors: where per-GPU readings come from, behind one interface.

The rest of the agent sees only :class:`Collector`: the billable units of the node and,
per tick, one :class:`TickReading` per unit. Whether the numbers come from NVML or from
the simulated fleet is invisible past this point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GpuUnit:
    """One billable unit: a whole GPU, or a MIG instance where MIG is on.

    ``uuid`` is what the report carries as ``gpu_uuid`` (``GPU-…`` or ``MIG-…``);
    ``index`` is the physical GPU's index (MIG instances share their parent's).
    """

    uuid: str
    index: int
    sku: str
    parent_uuid: str = ""  # set for MIG instances


@dataclass(frozen=True)
class TickReading:
    """What one unit did during one tick, as integer counters for the whole tick."""

    unit: GpuUnit
    busy_us: int
    unhealthy: bool
    energy_mj: int
    memory_peak_bytes: int


@dataclass
class CollectorIssue:
    """Something a collector could not read: logged and counted, never fatal.

    ``call`` names the NVML function (or the simulated equivalent); ``unit`` the unit's
    uuid, or "" for the node.
    """

    call: str
    unit: str
    detail: str


@dataclass
class TickReadings:
    readings: list[TickReading]
    issues: list[CollectorIssue] = field(default_factory=list)


class Collector(Protocol):
    def units(self) -> list[GpuUnit]:
        """The node's billable units, in a stable order."""
        ...

    def read_tick(self, tick_start_us: int, tick_end_us: int) -> TickReadings:
        """Readings for the tick that just ended: one per unit of :meth:`units`."""
        ...

    def close(self) -> None: ...
