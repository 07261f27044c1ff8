"""A simulated GPU fleet: N nodes × G GPUs held by T tenants, deterministic from a seed.

Each node publishes one report per publish interval (``ticks_per_report`` clock-aligned
ticks) carrying one sample per GPU per tick. Nodes start at staggered tick phases, so a
report usually spans two minute windows while each tick stays inside one. Every fifth
node is split between two tenants and a few GPUs are unallocated (metered to the reserved
``unallocated`` tenant), as on a real shared cluster.

Time is simulated: reports are produced as fast as they can be published, with event
times starting at ``start_us``. The same spec always yields the same bytes.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from core.errors import ConfigError
from core.identity import SKU_MEMORY_BYTES, SKU_POWER_MW, UNALLOCATED
from core.units import US_PER_SECOND

TENANT_NAMES = (
    "aurora-labs",
    "borealis-ai",
    "cinder-research",
    "dynamo-ml",
    "ember-intel",
    "fathom-ai",
    "glacier-labs",
    "helix-research",
)
DEFAULT_START_US = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()) * US_PER_SECOND


@dataclass(frozen=True)
class FleetSpec:
    nodes: int = 100
    gpus_per_node: int = 8
    tenants: int = 3
    reports_per_node: int = 30
    tick_us: int = 10 * US_PER_SECOND
    ticks_per_report: int = 6
    seed: int = 7
    start_us: int = DEFAULT_START_US
    cluster: str = "sc1"

    def __post_init__(self) -> None:
        if not 1 <= self.tenants <= len(TENANT_NAMES):
            raise ConfigError(f"tenants must be 1..{len(TENANT_NAMES)}")
        for name in ("nodes", "gpus_per_node", "reports_per_node", "tick_us", "ticks_per_report"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.start_us % self.tick_us:
            raise ConfigError("start_us must be aligned to the tick")

    @property
    def report_us(self) -> int:
        return self.tick_us * self.ticks_per_report

    @property
    def samples(self) -> int:
        return self.nodes * self.reports_per_node * self.ticks_per_report * self.gpus_per_node

    def node_id(self, n: int) -> str:
        return f"{self.cluster}-node-{n:05d}"


@dataclass(frozen=True)
class Holding:
    """Who holds one GPU for the whole run."""

    gpu_index: int
    gpu_uuid: str
    tenant_id: str


@dataclass(frozen=True)
class Node:
    node_id: str
    boot_id: str
    sku: str
    phase_us: int  # the node's first report starts this long after spec.start_us
    holdings: tuple[Holding, ...]


def build_nodes(spec: FleetSpec) -> list[Node]:
    tenants = TENANT_NAMES[: spec.tenants]
    skus = tuple(SKU_POWER_MW)
    nodes = []
    for n in range(spec.nodes):
        rng = random.Random(f"{spec.seed}:node:{n}")
        node_id = spec.node_id(n)
        primary = tenants[n % len(tenants)]
        secondary = tenants[(n + 1) % len(tenants)]
        holdings = []
        for g in range(spec.gpus_per_node):
            if n % 5 == 4 and g >= spec.gpus_per_node // 2:
                tenant = secondary
            elif rng.random() < 0.04:
                tenant = UNALLOCATED
            else:
                tenant = primary
            gpu_uuid = "GPU-" + str(uuid.UUID(int=rng.getrandbits(128), version=4))
            holdings.append(Holding(g, gpu_uuid, tenant))
        boot_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        phase = (n % spec.ticks_per_report) * spec.tick_us
        nodes.append(Node(node_id, boot_id, skus[n % len(skus)], phase, tuple(holdings)))
    return nodes


def _sample(
    rng: random.Random, node: Node, holding: Holding, tick_start: int, tick_us: int, seq: int
) -> dict[str, Any]:
    low_mw, high_mw = SKU_POWER_MW[node.sku]
    idle = holding.tenant_id == UNALLOCATED
    busy_us = 0 if idle else rng.randint(0, tick_us)
    unhealthy_us = rng.randint(1, tick_us) if rng.random() < 0.01 else 0
    power_mw = low_mw if idle else rng.randint(low_mw, high_mw)
    return {
        "gpu_uuid": holding.gpu_uuid,
        "gpu_index": holding.gpu_index,
        "sku": node.sku,
        "tenant_id": holding.tenant_id,
        "job_id": "" if idle else f"{holding.tenant_id}-job-{seq // 10:04d}",
        "tick_start_us": tick_start,
        "tick_end_us": tick_start + tick_us,
        "allocated_us": tick_us,
        "busy_us": busy_us,
        "unhealthy_us": unhealthy_us,
        "energy_mj": power_mw * tick_us // US_PER_SECOND,
        "memory_peak_bytes": rng.randint(0, SKU_MEMORY_BYTES[node.sku]),
    }


def node_report(spec: FleetSpec, node: Node, seq: int) -> dict[str, Any]:
    """Report ``seq`` of ``node``: the same dict every time it is asked for."""
    rng = random.Random(f"{spec.seed}:{node.node_id}:{seq}")
    start = spec.start_us + node.phase_us + seq * spec.report_us
    samples = [
        _sample(rng, node, holding, start + t * spec.tick_us, spec.tick_us, seq)
        for t in range(spec.ticks_per_report)
        for holding in node.holdings
    ]
    return {
        "node_id": node.node_id,
        "boot_id": node.boot_id,
        "seq": seq,
        "cluster": spec.cluster,
        "interval_start_us": start,
        "interval_end_us": start + spec.report_us,
        "samples": samples,
    }


def fleet_reports(spec: FleetSpec) -> Iterator[dict[str, Any]]:
    """Every report of the run in publish order: round by round, node by node."""
    nodes = build_nodes(spec)
    for seq in range(spec.reports_per_node):
        for node in nodes:
            yield node_report(spec, node, seq)


def spec_dict(spec: FleetSpec) -> dict[str, Any]:
    return asdict(spec)
