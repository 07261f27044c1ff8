"""Units. Everything on the wire and in the warehouse is an integer in its smallest unit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
US_PER_GPU_HOUR = 3_600 * US_PER_SECOND  # a GPU-hour is 3,600,000,000 GPU-µs
MJ_PER_KWH = 3_600_000_000  # 1 kWh = 3.6 MJ = 3.6e9 mJ
INT64_MAX = 2**63 - 1
US_PER_DAY = 86_400 * US_PER_SECOND
# The counters a sample carries that add up over time and GPUs: what rollups sum.
USAGE_COUNTERS = ("allocated_us", "busy_us", "unhealthy_us", "energy_mj")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_datetime(t_us: int) -> datetime:
    """The UTC datetime of an epoch-µs instant, to the second (as ClickHouse DateTime stores it)."""
    return datetime.fromtimestamp(t_us // US_PER_SECOND, tz=UTC)


def epoch_us(moment: datetime) -> int:
    """Epoch µs of a datetime, exactly (a naive one is UTC, as the driver returns DateTime)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1)


def gpu_hours(gpu_us: int) -> Decimal:
    """Exact GPU-hours of an integer count of GPU-µs (for display; never a float)."""
    return Decimal(gpu_us) / US_PER_GPU_HOUR


def kwh(energy_mj: int) -> Decimal:
    return Decimal(energy_mj) / MJ_PER_KWH
