"""Audited corrections of metered usage: the file format and its rules, no I/O.

Finance corrects usage without touching the ledger or the rollups: a correction is an
append-only record (who, why, which ticket) plus the exact usage it moves, computed once
from the ledger when it is added (``billing/correction_store.py``). Two kinds:

- ``void``: the selected usage is not billed to anyone;
- ``reattribute``: the selected usage is billed to ``to_tenant_id`` instead.

The selection is the ledger's samples (as metered) whose tick starts in [start, end), of
``tenant_id`` and, when given, of one node and/or one GPU. ``start`` and ``end`` are whole
UTC minutes, so a correction covers whole minute windows. A re-attribution moves usage:
the source tenant's counters go down by exactly what the target's go up, nothing is
created or lost. The file is validated whole before anything is written (as contracts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billing.contracts import format_instant, load_json_file, parse_instant
from billing.errors import ContractError, CorrectionError
from core.identity import UNALLOCATED, ReportLimits, is_valid_name, is_valid_tenant

KINDS = ("void", "reattribute")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FIELDS = {
    "correction_id",
    "kind",
    "tenant_id",
    "to_tenant_id",
    "node_id",
    "gpu_uuid",
    "start",
    "end",
    "author",
    "reason",
    "ticket",
}
_LIMITS = ReportLimits()
_REQUIRED = ("correction_id", "kind", "tenant_id", "start", "end", "author", "reason", "ticket")


@dataclass(frozen=True)
class Correction:
    correction_id: str
    kind: str  # one of KINDS
    tenant_id: str  # whose metered usage is selected
    to_tenant_id: str  # reattribute: who gets it; void: ""
    node_id: str  # "" for every node
    gpu_uuid: str  # "" for every GPU
    start_us: int
    end_us: int  # exclusive
    author: str
    reason: str
    ticket: str

    def describe(self) -> str:
        scope = [f"tenant {self.tenant_id}"]
        scope += [f"node {self.node_id}"] if self.node_id else []
        scope += [f"GPU {self.gpu_uuid}"] if self.gpu_uuid else []
        what = f"to {self.to_tenant_id}" if self.kind == "reattribute" else "voided"
        span = f"[{format_instant(self.start_us)}, {format_instant(self.end_us)})"
        return f"{self.correction_id} {self.kind} {', '.join(scope)} {span} {what}"

    def overlaps(self, other: Correction) -> bool:
        """Could the two select a common sample? (Same tenant, overlapping time, and nodes
        and GPUs not told apart.)"""

        def apart(a: str, b: str) -> bool:
            return bool(a) and bool(b) and a != b

        return (
            self.tenant_id == other.tenant_id
            and self.start_us < other.end_us
            and other.start_us < self.end_us
            and not apart(self.node_id, other.node_id)
            and not apart(self.gpu_uuid, other.gpu_uuid)
        )


def _text(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise CorrectionError(f"{where}: {key} must be a string, got {value!r}")
    return value.strip()


def parse_correction(doc: Any, where: str) -> Correction:
    if not isinstance(doc, dict):
        raise CorrectionError(f"{where}: expected an object")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise CorrectionError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if not _text(doc, k, where)]
    if missing:
        raise CorrectionError(
            f"{where}: missing {', '.join(missing)} (every correction says "
            "what, whose, when, who, why and which ticket)"
        )
    fields = {k: _text(doc, k, where) for k in _FIELDS}
    if not _ID.match(fields["correction_id"]):
        raise CorrectionError(
            f"{where}: correction_id {fields['correction_id']!r} must be 1-64 "
            "letters, digits, '.', '_' or '-'"
        )
    kind = fields["kind"]
    if kind not in KINDS:
        raise CorrectionError(f"{where}: kind {kind!r} must be one of {', '.join(KINDS)}")
    for key in ("tenant_id", "to_tenant_id"):
        if fields[key] and not is_valid_tenant(fields[key], _LIMITS):
            raise CorrectionError(f"{where}: {key} {fields[key]!r} is not a valid tenant id")
    if kind == "reattribute":
        target = fields["to_tenant_id"]
        if not target or target == UNALLOCATED:
            raise CorrectionError(
                f"{where}: a reattribute names to_tenant_id, a tenant (to "
                "bill nobody, use kind void)"
            )
        if target == fields["tenant_id"]:
            raise CorrectionError(f"{where}: to_tenant_id is the tenant it moves usage from")
    elif fields["to_tenant_id"]:
        raise CorrectionError(f"{where}: a void has no to_tenant_id")
    for key in ("node_id", "gpu_uuid"):
        if fields[key] and not is_valid_name(fields[key]):
            raise CorrectionError(f"{where}: {key} {fields[key]!r} is not a valid name")
    try:  # instants fall on whole minutes: a correction covers whole minute windows
        start_us = parse_instant(fields["start"], f"{where}: start")
        end_us = parse_instant(fields["end"], f"{where}: end")
    except ContractError as exc:
        raise CorrectionError(str(exc)) from exc
    if end_us <= start_us:
        raise CorrectionError(f"{where}: end must be after start")
    return Correction(
        fields["correction_id"],
        kind,
        fields["tenant_id"],
        fields["to_tenant_id"],
        fields["node_id"],
        fields["gpu_uuid"],
        start_us,
        end_us,
        fields["author"],
        fields["reason"],
        fields["ticket"],
    )


def parse_corrections(doc: Any) -> list[Correction]:
    """The corrections of a corrections document, every rule checked; none overlap."""
    if not isinstance(doc, dict) or not isinstance(doc.get("corrections"), list):
        raise CorrectionError('a corrections file is {"corrections": [ … ]}')
    found = [parse_correction(c, f"corrections[{i}]") for i, c in enumerate(doc["corrections"])]
    if not found:
        raise CorrectionError("the corrections file holds no correction")
    check_new(found, [])
    return found


def check_new(new: list[Correction], recorded: list[Correction]) -> None:
    """Refuse an id used twice, or two corrections that could select the same sample: the
    second would correct usage the first has already moved."""
    ids = [c.correction_id for c in (*recorded, *new)]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise CorrectionError(
            f"correction id(s) {', '.join(twice)} already used: a correction "
            "is never changed; add one with a new id"
        )
    for i, c in enumerate(new):
        for other in (*recorded, *new[:i]):
            if c.overlaps(other):
                raise CorrectionError(
                    f"{c.correction_id} overlaps {other.correction_id} (same tenant, "
                    "overlapping time, nodes and GPUs not told apart): narrow its node, GPU "
                    "or time so that no sample is corrected twice"
                )


def load_corrections_file(path: Path) -> list[Correction]:
    return load_json_file(path, "corrections file", parse_corrections)
