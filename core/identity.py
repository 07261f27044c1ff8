"""Who and what the pipeline names, and the rules for those names, in one place: node, boot,
cluster and GPU ids, tenant ids (and the reserved ``unallocated``), SKUs and MIG profiles,
Kafka topics. The agent that mints them, the worker that validates reports and billing
that prices them all import these rules from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.errors import ConfigError
from core.units import US_PER_SECOND

# The tenant an agent meters a GPU to when nobody holds it: metered, never billed.
UNALLOCATED = "unallocated"

DEFAULT_SKUS = frozenset({"A100", "H100", "H200", "B200", "GB200", "L40S", "MI300X"})
# fullmatch, not match with $: "$" also matches before a trailing newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_TENANT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class ReportLimits:
    """Bounds that make a report physically plausible; overflow is impossible inside them."""

    known_skus: frozenset[str] = DEFAULT_SKUS
    max_samples: int = 65_536
    max_interval_us: int = 24 * 3600 * US_PER_SECOND
    max_future_us: int = 15 * 60 * US_PER_SECOND  # clock skew an agent may have
    max_power_mw: int = 10_000_000  # 10 kW per GPU: above any board we meter
    max_memory_bytes: int = 2**41  # 2 TiB per GPU
    extra_tenant_ids: frozenset[str] = field(default_factory=frozenset)


# A MIG instance bills as its own SKU: "<parent SKU>-MIG-<profile>", e.g. "H100-MIG-1g.10gb".
_MIG_SKU = re.compile(r"(?P<parent>[A-Z0-9]+)-MIG-(?P<slices>[0-9]+)g\.[0-9]+gb")
# Every MIG-capable GPU we meter (A100, H100, H200, B200, GB200) has seven compute slices:
# a "<N>g" instance is N/7 of its parent GPU, which is what it counts towards committed GPUs.
MIG_SLICES_PER_GPU = 7


def gpu_sevenths(sku: str) -> int:
    """Sevenths of a whole GPU that one unit of ``sku`` holds: 7 for a GPU, N for an
    "<N>g" MIG instance (never more than 7)."""
    mig = _MIG_SKU.fullmatch(sku)
    return min(int(mig.group("slices")), MIG_SLICES_PER_GPU) if mig else MIG_SLICES_PER_GPU


def is_known_sku(sku: str, limits: ReportLimits) -> bool:
    if sku in limits.known_skus:
        return True
    mig = _MIG_SKU.fullmatch(sku)
    return mig is not None and mig.group("parent") in limits.known_skus


def is_valid_name(text: str) -> bool:
    """The rule for node ids, boot ids, cluster names and GPU uuids."""
    return bool(_NAME.fullmatch(text))


def is_valid_tenant(tenant_id: str, limits: ReportLimits) -> bool:
    return bool(_TENANT.fullmatch(tenant_id)) or tenant_id in limits.extra_tenant_ids


_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def check_topic(name: str, what: str = "topic") -> str:
    """A Kafka topic name (letters, digits, '.', '_', '-'), refused at the edge: a broker
    refuses any other only once a producer is already running."""
    if not _TOPIC.match(name):
        raise ConfigError(
            f"{what} {name!r} is not a Kafka topic name: use 1–200 letters, digits, '.', '_' or '-'"
        )
    return name


# What a simulated GPU of each SKU draws (idle to board limit, mW) and holds (bytes): the
# simulated collector and the fleet simulator both draw from it.
SKU_POWER_MW = {"H100": (70_000, 700_000), "H200": (75_000, 700_000), "B200": (90_000, 1_000_000)}
SKU_MEMORY_BYTES = {"H100": 80 * 2**30, "H200": 141 * 2**30, "B200": 192 * 2**30}
