"""Who holds each GPU: the allocation source, and the per-unit timeline of holders.

File format (the scheduler writes it; the agent reloads it when its mtime or size
changes). JSON::

    {"allocations": [
        {"gpu": "GPU-6f0c…", "tenant_id": "aurora-labs", "job_id": "train-17",
         "since_us": 1763900000250000},
        {"gpu": "3", "tenant_id": "borealis-ai", "job_id": "eval-2"}
    ]}

or CSV with the header ``gpu,tenant_id,job_id,since_us``. ``gpu`` is a unit's uuid
(``GPU-…``, or ``MIG-…`` for a MIG instance) or a whole GPU's index. ``since_us`` (optional,
µs since the epoch, UTC) is when this holder took the GPU; without it the change counts
from the moment the agent sees the new file. Units not listed are unallocated and metered
to the reserved tenant ``unallocated``.

A file that does not parse, names an unknown unit twice, or carries a tenant id the
pipeline would reject is refused whole: the agent keeps the last good allocation, logs the
precise error and counts it (``meter_agent_allocation_errors_total``). A file that does not
exist (or cannot be read) is the same error, logged and counted on every tick while it
lasts; meanwhile the last good allocation stays in force, which before any file was read is
every unit ``unallocated``. Replace this file
source by another :class:`AllocationSource` (a scheduler API) without touching the rest.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.collectors import GpuUnit
from agent.errors import AllocationError
from core.identity import UNALLOCATED, ReportLimits, is_valid_tenant

MAX_JOB_ID_CHARS = 256


@dataclass(frozen=True)
class Holder:
    tenant_id: str
    job_id: str = ""


IDLE = Holder(UNALLOCATED, "")


@dataclass(frozen=True)
class Assignment:
    holder: Holder
    since_us: int | None


class AllocationSource(Protocol):
    def current(self) -> Mapping[str, Assignment]:
        """Assignments by unit uuid; units absent are unallocated. Raises AllocationError."""
        ...


def parse_allocations(text: str, suffix: str, units: list[GpuUnit]) -> dict[str, Assignment]:
    by_uuid = {u.uuid: u for u in units}
    by_index = {str(u.index): u for u in units if not u.parent_uuid}
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and "gpu" not in rows[0]:
            raise AllocationError(
                "CSV allocation file: header must be gpu,tenant_id,job_id,since_us"
            )
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AllocationError(f"allocation file is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("allocations"), list):
            raise AllocationError('allocation file: expected {"allocations": [...]}')
        rows = doc["allocations"]
    limits = ReportLimits()
    out: dict[str, Assignment] = {}
    for n, row in enumerate(rows, start=1):
        where = f"allocation entry {n}"
        if not isinstance(row, dict):
            raise AllocationError(f"{where}: expected an object")
        gpu = str(row.get("gpu", "")).strip()
        unit = by_uuid.get(gpu) or by_index.get(gpu)
        if unit is None:
            raise AllocationError(f"{where}: gpu {gpu!r} is not a unit of this node")
        if unit.uuid in out:
            raise AllocationError(f"{where}: gpu {gpu!r} is listed twice")
        tenant = str(row.get("tenant_id", ""))
        if not is_valid_tenant(tenant, limits):
            raise AllocationError(f"{where}: tenant_id {tenant!r} is not a valid tenant id")
        job = str(row.get("job_id") or "")
        if len(job) > MAX_JOB_ID_CHARS:
            raise AllocationError(f"{where}: job_id longer than {MAX_JOB_ID_CHARS} characters")
        since = row.get("since_us")
        if since in (None, ""):
            since_us = None
        else:
            try:
                since_us = int(since)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raise AllocationError(f"{where}: since_us {since!r} is not an integer") from exc
            if isinstance(since, float) or since_us < 0:
                raise AllocationError(f"{where}: since_us must be a non-negative integer")
        out[unit.uuid] = Assignment(Holder(tenant, job), since_us)
    return out


class AllocationFile:
    """The file source: reparsed only when the file's mtime or size changes."""

    def __init__(self, path: str | Path, units: list[GpuUnit]) -> None:
        self.path = Path(path)
        self.units = units
        self._seen: tuple[int, int] | None = None
        self._current: dict[str, Assignment] = {}

    def current(self) -> Mapping[str, Assignment]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            self._seen = None  # parsed afresh once it appears
            raise AllocationError(
                f"allocation file {self.path} does not exist: GPUs are metered to the last "
                f"allocation read ({len(self._current)} units held; none: all "
                f"'{UNALLOCATED}') until it does"
            ) from exc
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._seen:
            # Remember the stamp first: a bad file is reported once, not on every tick.
            self._seen = stamp
            text = self.path.read_text(encoding="utf-8")
            self._current = parse_allocations(text, self.path.suffix.lower(), self.units)
        return self._current


@dataclass(frozen=True)
class Piece:
    start_us: int
    end_us: int
    holder: Holder


class Attribution:
    """Per unit, the holders over time, from the changes seen; cut into ticks exactly.

    A change is placed at its ``since_us`` when given, else when it was seen, but never
    before the start of the tick being measured: earlier ticks are already reported.
    """

    def __init__(self, units: list[GpuUnit], start_us: int) -> None:
        self._timeline: dict[str, list[tuple[int, Holder]]] = {
            u.uuid: [(start_us, IDLE)] for u in units
        }

    def observe(self, assignments: Mapping[str, Assignment], seen_us: int, floor_us: int) -> None:
        for uuid, timeline in self._timeline.items():
            assignment = assignments.get(uuid)
            holder = assignment.holder if assignment else IDLE
            if holder == timeline[-1][1]:
                continue
            at = seen_us
            if assignment is not None and assignment.since_us is not None:
                at = assignment.since_us
            at = min(max(at, floor_us, timeline[-1][0]), seen_us)
            if at == timeline[-1][0]:
                timeline[-1] = (at, holder)
            else:
                timeline.append((at, holder))

    def pieces(self, uuid: str, start_us: int, end_us: int) -> list[Piece]:
        """[start, end) cut where the holder changed; drops history before ``end``."""
        timeline = self._timeline[uuid]
        out: list[Piece] = []
        for i, (since, holder) in enumerate(timeline):
            until = timeline[i + 1][0] if i + 1 < len(timeline) else end_us
            lo, hi = max(since, start_us), min(until, end_us)
            if lo < hi:
                out.append(Piece(lo, hi, holder))
        if not out:  # a tick before the first change we know of: the earliest holder
            out.append(Piece(start_us, end_us, timeline[0][1]))
        while len(timeline) > 1 and timeline[1][0] <= end_us:
            timeline.pop(0)
        return out
