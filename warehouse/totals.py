"""The warehouse's usage totals, per (tenant, SKU, cluster, window), for checking one side
against another: the rollups at each grain, the ledger, and what a fleet emitted.

Every read here is scoped to a period when given one, so reconciling a month reads that
month (the views take the WHERE down to the tables' keys; the ledger is read from its
tables by their partition key).
"""

from __future__ import annotations

from typing import Any

from meter.units import US_PER_DAY, US_PER_MINUTE, US_PER_SECOND, USAGE_COUNTERS, utc_datetime
from warehouse.client import Warehouse

COUNTERS = USAGE_COUNTERS
FIELDS = (*COUNTERS, "sample_count")
TotalsKey = tuple[str, str, str, int]  # tenant_id, sku, cluster, window_start_us
Totals = dict[TotalsKey, dict[str, int]]

US_PER_HOUR = 60 * US_PER_MINUTE
# grain -> (view, its window column as epoch seconds, the column, its width)
GRAINS: dict[str, tuple[str, str, str, int]] = {
    "minute": ("usage_by_minute", "toUInt32(window_start)", "window_start", US_PER_MINUTE),
    "hour": ("usage_by_hour", "toUInt32(hour_start)", "hour_start", US_PER_HOUR),
    "day": ("usage_by_day", "toUInt32(toDateTime(day))", "day", US_PER_DAY),
}
# A report's ticks lie inside its interval, which validation bounds to a day
# (streams/validate.py, max_interval_us): a ledger read by interval_start starts a day early.
_LEDGER_LEAD_US = US_PER_DAY
# (table, the column its partitions are cut by, its per-sample expansion, tenant, SKU and
# tick start per sample, the counters' sums)
_PER_SAMPLE = "sum(allocated_us), sum(busy_us), sum(unhealthy_us), sum(energy_mj)"
_EXPANDED = "sum(a), sum(b), sum(u), sum(e)"
_LEDGER_TABLES = (
    ("usage_ledger_by_sample", "tick_start", "", "tenant_id", "sku", "tick_start_us",
     _PER_SAMPLE),
    ("usage_ledger_reports", "interval_start",
     "ARRAY JOIN tenant_id AS t, sku AS k, tick_start_us AS s, allocated_us AS a, "
     "busy_us AS b, unhealthy_us AS u, energy_mj AS e", "t", "k", "s", _EXPANDED),
    ("usage_ledger_packed", "interval_start",
     "ARRAY JOIN gpu_at AS g, tick_at AS i, allocated_us AS a, busy_us AS b, "
     "unhealthy_us AS u, energy_mj AS e", "tenant_ids[g]", "skus[g]", "tick_starts_us[i]",
     _EXPANDED),
)  # fmt: skip


def _range(column: str, start_us: int | None, end_us: int | None, day: bool) -> tuple[str, dict]:
    if start_us is None or end_us is None:
        return "", {}
    cast = (lambda t: utc_datetime(t).date()) if day else utc_datetime
    return (
        f" WHERE {column} >= %(start)s AND {column} < %(end)s",
        {"start": cast(start_us), "end": cast(end_us)},
    )


def rollup_totals(
    warehouse: Warehouse,
    grain: str = "minute",
    start_us: int | None = None,
    end_us: int | None = None,
) -> Totals:
    """The rollups of ``grain`` (minute, hour, day), late usage included, over
    [start_us, end_us) when given (whole windows of the grain)."""
    view, seconds, column, _ = GRAINS[grain]
    where, params = _range(column, start_us, end_us, day=grain == "day")
    rows = warehouse.execute(
        f"SELECT tenant_id, sku, cluster, {seconds}, {', '.join(FIELDS)} FROM {view}{where}",
        params,
    )
    return {
        (t, s, c, int(w) * US_PER_SECOND): dict(zip(FIELDS, map(int, rest), strict=True))
        for t, s, c, w, *rest in rows
    }


def ledger_totals(
    warehouse: Warehouse,
    window_us: int = US_PER_MINUTE,
    start_us: int | None = None,
    end_us: int | None = None,
) -> Totals:
    """The ledger summed per (tenant, sku, cluster, window of the tick start), over ticks
    starting in [start_us, end_us) when given. Equal to the rollups when ticks do not
    straddle windows (agents align them).

    Read from the ledger tables by their partition key, not through ``usage_ledger``: a
    view over FINAL would read every month.
    """
    params: dict[str, Any] = {"w": window_us}
    totals: Totals = {}
    for table, cut_by, expand, tenant, sku, tick, counters in _LEDGER_TABLES:
        where = ""
        if start_us is not None and end_us is not None:
            where = (
                f" WHERE {cut_by} >= %(lead_from)s AND {cut_by} < %(lead_to)s"
                f" AND {tick} >= %(start)s AND {tick} < %(end)s"
            )
            params |= {
                "lead_from": utc_datetime(max(start_us - _LEDGER_LEAD_US, 0)),
                "lead_to": utc_datetime(end_us),
                "start": start_us,
                "end": end_us,
            }
        rows = warehouse.execute(
            f"SELECT {tenant} AS tenant, {sku} AS sku_, cluster, "
            f"intDiv({tick}, %(w)s) * %(w)s AS window_us, {counters}, count() "
            f"FROM {table} FINAL {expand}{where} GROUP BY tenant, sku_, cluster, window_us",
            params,
        )
        for t, s, c, w, *rest in rows:
            add_totals(totals, (t, s, c, int(w)), dict(zip(FIELDS, map(int, rest), strict=True)))
    return totals


def add_totals(totals: Totals, key: TotalsKey, values: dict[str, int]) -> None:
    row = totals.setdefault(key, dict.fromkeys(FIELDS, 0))
    for name, value in values.items():
        row[name] += value


def coarsen(totals: Totals, width_us: int) -> Totals:
    """``totals`` summed per window of ``width_us`` (an hour, a day)."""
    out: Totals = {}
    for (t, s, c, w), values in totals.items():
        add_totals(out, (t, s, c, w - w % width_us), values)
    return out


def differences(expected: Totals, stored: Totals) -> list[dict[str, Any]]:
    """Every key and counter where the two sides differ (missing counts as zero), as
    ``{"key", "counter", "emitted", "stored"}``."""
    out = []
    zero = dict.fromkeys(FIELDS, 0)
    for key in sorted(expected.keys() | stored.keys()):
        a, b = expected.get(key, zero), stored.get(key, zero)
        for name in FIELDS:
            if a[name] != b[name]:
                out.append({"key": key, "counter": name, "emitted": a[name], "stored": b[name]})
    return out


def grain_differences(
    warehouse: Warehouse, expected: Totals, start_us: int | None = None, end_us: int | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Per grain, where its rollups differ from ``expected`` (minute totals) coarsened to it."""
    return {
        grain: differences(
            coarsen(expected, width) if width != US_PER_MINUTE else expected,
            rollup_totals(warehouse, grain, start_us, end_us),
        )
        for grain, (_, _, _, width) in GRAINS.items()
    }
