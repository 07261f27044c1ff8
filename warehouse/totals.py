"""The warehouse's usage totals, per (tenant, SKU, cluster, window), for checking one side
against another: the rollups at each grain, the ledger, and what a fleet emitted.

Every read here is scoped to a period when given one, so reconciling a month reads that
month (the views take the WHERE down to the tables' keys; the ledger is read from its
table by its key, the reports' start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.units import US_PER_DAY, US_PER_MINUTE, US_PER_SECOND, USAGE_COUNTERS, utc_datetime
from core.windows import month_start
from warehouse.client import Warehouse

COUNTERS = USAGE_COUNTERS
FIELDS = (*COUNTERS, "sample_count")
TotalsKey = tuple[str, str, str, int]  # tenant_id, sku, cluster, window_start_us
Totals = dict[TotalsKey, dict[str, int]]

US_PER_HOUR = 60 * US_PER_MINUTE
# grain -> (its window column as epoch seconds, the column, its width; 0: calendar months)
GRAINS: dict[str, tuple[str, str, int]] = {
    "minute": ("toUInt32(window_start)", "window_start", US_PER_MINUTE),
    "hour": ("toUInt32(hour_start)", "hour_start", US_PER_HOUR),
    "day": ("toUInt32(toDateTime(day))", "day", US_PER_DAY),
    "month": ("toUInt32(toDateTime(month))", "month", 0),
}
_DATE_GRAINS = ("day", "month")  # their window column is a Date
# A report's ticks lie inside its interval, which validation bounds to a day (core/identity.py,
# ReportLimits.max_interval_us): a ledger read by interval_start starts a day early.
_LEDGER_LEAD_US = US_PER_DAY
# The ledger (migration 0013: every earlier ledger table is copied into it) spelled out per
# sample: tenant and SKU are the row's, the tick and counters its arrays'.
_LEDGER = (
    "usage_ledger_holdings FINAL ARRAY JOIN tick_start_us AS ls, allocated_us AS a, "
    "busy_us AS b, unhealthy_us AS u, energy_mj AS e"
)
_LEDGER_SUMS = "sum(a), sum(b), sum(u), sum(e)"


# grain -> (partials, adjustments, window column)
GRAIN_TABLES = {
    "minute": ("usage_rollup_partials", "usage_adjustments", "window_start"),
    "hour": ("usage_hour_partials", "usage_hour_adjustments", "hour_start"),
    "day": ("usage_day_partials", "usage_day_adjustments", "day"),
    "month": ("usage_month_partials", "usage_month_adjustments", "month"),
}


def grain_rows_sql(grain: str, where: str, key: tuple[tuple[str, str], ...] | None = None) -> str:
    """What the grain's view computes (latest partial per key and partition, plus late
    usage), over the rows of ``where`` only, read from the tables: the pipeline's own
    reads do not depend on the server pushing a WHERE into a view (18.16 does not below an
    outer GROUP BY). Columns: tenant_id, sku, cluster, the window column, the counters;
    or, with ``key`` ((expression, alias) pairs), the aliases, then the counters."""
    partials, adjustments, column = GRAIN_TABLES[grain]
    if key is None:
        key = tuple((c, c) for c in ("tenant_id", "sku", "cluster", column))
    named = ", ".join(e if e == a else f"{e} AS {a}" for e, a in key)
    grouped = ", ".join(a for _, a in key)
    latest = ", ".join(f"argMax({c}, version) AS p_{c}" for c in FIELDS)
    late = ", ".join(f"any({c}) AS p_{c}" for c in FIELDS)
    summed = ", ".join(f"sum(p_{c}) AS {c}" for c in FIELDS)
    return (
        f"SELECT {grouped}, {summed} FROM ("
        f"SELECT {named}, {latest} FROM {partials} WHERE {where} "
        f"GROUP BY {grouped}, source_partition UNION ALL "
        f"SELECT {named}, {late} FROM {adjustments} WHERE {where} "
        f"GROUP BY {grouped}, source_partition, source_offset) AS parts GROUP BY {grouped}"
    )


# The ledger's rows of reports starting in [lead_from_us, end): a range of the table's key,
# which its partitions are by too (migration 0020), so both engines read only those months.
LEDGER_REPORTS = "interval_start_us >= %(lead_from_us)s AND interval_start_us < %(end)s"


def _ledger_range() -> str:
    """The ledger's samples whose ticks start in [start, end): the reports that may hold
    them, then tick by tick."""
    return f"{LEDGER_REPORTS} AND ls >= %(start)s AND ls < %(end)s"


def ledger_params(start_us: int, end_us: int) -> dict[str, Any]:
    lead_us = max(start_us - _LEDGER_LEAD_US, 0)
    return {
        "lead_from_us": lead_us,
        "start": start_us,
        "end": end_us,
    }


def _range(column: str, start_us: int | None, end_us: int | None, day: bool) -> tuple[str, dict]:
    if start_us is None or end_us is None:
        return "", {}
    cast = (lambda t: utc_datetime(t).date()) if day else utc_datetime
    return (
        f"{column} >= %(start)s AND {column} < %(end)s",
        {"start": cast(start_us), "end": cast(end_us)},
    )


def rollup_totals(
    warehouse: Warehouse,
    grain: str = "minute",
    start_us: int | None = None,
    end_us: int | None = None,
) -> Totals:
    """The rollups of ``grain`` (minute, hour, day, month), late usage included, over
    [start_us, end_us) when given (whole windows of the grain)."""
    seconds, column, _ = GRAINS[grain]
    where, params = _range(column, start_us, end_us, day=grain in _DATE_GRAINS)
    rows = warehouse.execute(
        f"SELECT tenant_id, sku, cluster, {seconds}, {', '.join(FIELDS)} "
        f"FROM ({grain_rows_sql(grain, where or '1')}) AS rows",
        params,
    )
    return {
        (t, s, c, int(w) * US_PER_SECOND): dict(zip(FIELDS, map(int, rest), strict=True))
        for t, s, c, w, *rest in rows
    }


_MATCHED = ("tenant_id", "node_id", "gpu_uuid")  # the columns a selection may name


def ledger_totals(
    warehouse: Warehouse,
    window_us: int = US_PER_MINUTE,
    start_us: int | None = None,
    end_us: int | None = None,
    match: dict[str, str] | None = None,
) -> Totals:
    """The ledger summed per (tenant, sku, cluster, window of the tick start), over ticks
    starting in [start_us, end_us) when given, of the rows whose ``match`` columns
    (tenant_id, node_id, gpu_uuid) have those values. Equal to the rollups when ticks do
    not straddle windows (agents align them).

    Read from the table with FINAL over the key range of the period's reports (the view
    deduplicates with a GROUP BY, more work for a question this wide).
    """
    params: dict[str, Any] = {"w": window_us}
    conditions = []
    if start_us is not None and end_us is not None:
        conditions.append(_ledger_range())
        params |= ledger_params(start_us, end_us)
    for column, value in sorted((match or {}).items()):
        if column not in _MATCHED:
            raise ValueError(f"cannot select the ledger by {column!r}")
        conditions.append(f"{column} = %(m_{column})s")
        params[f"m_{column}"] = value
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = warehouse.execute(
        f"SELECT tenant_id, sku, cluster, intDiv(ls, %(w)s) * %(w)s AS window_us, "
        f"{_LEDGER_SUMS}, count() FROM {_LEDGER}{where} GROUP BY tenant_id, sku, cluster, "
        "window_us",
        params,
    )
    totals: Totals = {}
    for t, s, c, w, *rest in rows:
        add_totals(totals, (t, s, c, int(w)), dict(zip(FIELDS, map(int, rest), strict=True)))
    return totals


def add_totals(totals: Totals, key: TotalsKey, values: dict[str, int]) -> None:
    row = totals.setdefault(key, dict.fromkeys(FIELDS, 0))
    for name, value in values.items():
        row[name] += value


def coarsen(totals: Totals, width_us: int) -> Totals:
    """``totals`` summed per window of ``width_us`` (an hour, a day; 0: a calendar month)."""
    out: Totals = {}
    for (t, s, c, w), values in totals.items():
        add_totals(out, (t, s, c, w - w % width_us if width_us else month_start(w)), values)
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
        for grain, (_, _, width) in GRAINS.items()
    }


# Reconciliation in the warehouse --------------------------------------------------------
# A month of a large fleet has millions of (tenant, SKU, cluster, minute) keys: they are
# compared where they are, a day at a time (each GROUP BY within the memory limit), and
# only the count and the first differences come back.
_SHOWN = 20
_SIDES = ("allocated_us", "busy_us", "unhealthy_us", "energy_mj", "sample_count")


@dataclass(frozen=True)
class Comparison:
    """Keys compared, keys that differ, and the first differences as
    ``(tenant, sku, cluster, window_start_us, {counter: (left, right)})``."""

    keys: int
    differing: int
    first: list[tuple[str, str, str, int, dict[str, tuple[int, int]]]]

    def __add__(self, other: Comparison) -> Comparison:
        first = (self.first + other.first)[:_SHOWN]
        return Comparison(self.keys + other.keys, self.differing + other.differing, first)


NO_KEYS = Comparison(0, 0, [])


def _compare(warehouse: Warehouse, union: str, params: dict[str, Any], key: str) -> Comparison:
    """Group ``union`` (rows of ``key`` columns, ``x_*`` and ``y_*`` counters, one side
    zero) by ``key`` and compare the sides counter by counter."""
    sums = ", ".join(f"sum(x_{c}) AS sx_{c}, sum(y_{c}) AS sy_{c}" for c in _SIDES)
    differs = " OR ".join(f"sx_{c} != sy_{c}" for c in _SIDES)
    shown = ", ".join(f"sx_{c}, sy_{c}" for c in _SIDES)
    rows = warehouse.execute(
        f"SELECT count(), countIf(differs), groupArrayIf({_SHOWN})(tuple({key}, {shown}), "
        f"differs) FROM (SELECT {key}, {sums}, ({differs}) AS differs FROM ({union}) AS sides "
        f"GROUP BY {key}) AS keyed",
        params,
    )
    keys, differing, first = rows[0]
    shown_rows = []
    width = key.count(",") + 1
    for row in first:
        t, k, c, at = row[width - 4 : width]
        values = row[width:]
        pairs = {
            name: (int(values[2 * i]), int(values[2 * i + 1])) for i, name in enumerate(_SIDES)
        }
        shown_rows.append((t, k, c, int(at) * US_PER_SECOND, pairs))
    return Comparison(int(keys), int(differing), shown_rows)


def _side(columns: str, x: bool, counters: tuple[str, ...] = _SIDES) -> str:
    """``columns`` (the key) and both sides' counters, this one's from ``counters`` and the
    other's zero, in the order every branch of the union shares."""
    out = [columns]
    for source, name in zip(counters, _SIDES, strict=True):
        mine, zero = f"toUInt64({source})", "toUInt64(0)"
        out.append(f"{mine if x else zero} AS x_{name}, {zero if x else mine} AS y_{name}")
    return ", ".join(out)


def compare_ledger_day(warehouse: Warehouse, day_us: int) -> Comparison:
    """The ledger (x) against the minute rollups (y), per (tenant, SKU, cluster, minute),
    for the ticks and windows starting in the UTC day at ``day_us``."""
    params = {
        "w": US_PER_MINUTE,
        "from": utc_datetime(day_us),
        "to": utc_datetime(day_us + US_PER_DAY),
        **ledger_params(day_us, day_us + US_PER_DAY),
    }
    minute_key = "tenant_id AS t, sku AS k, cluster AS c, toUInt64(toUInt32(window_start)) AS at"
    minutes = grain_rows_sql("minute", "window_start >= %(from)s AND window_start < %(to)s")
    ledger_key = "tenant_id AS t, sku AS k, cluster AS c, toUInt64(intDiv(ls, %(w)s) * 60) AS at"
    parts = [
        f"SELECT {_side(minute_key, x=False)} FROM ({minutes}) AS minutes",
        f"SELECT {_side(ledger_key, x=True, counters=('a', 'b', 'u', 'e', '1'))} "
        f"FROM {_LEDGER} WHERE {_ledger_range()}",
    ]
    return _compare(warehouse, " UNION ALL ".join(parts), params, "t, k, c, at")


def compare_grains_day(warehouse: Warehouse, day_us: int) -> Comparison:
    """The minute rollups (x) against the hour rollups (y) per hour, and the hour rollups
    (x) against the day rollups (y) per day, for the UTC day at ``day_us``: the worker
    writes every grain from the same pieces, so each coarse row is exactly the sum of the
    finer ones. (Keys of both checks are counted together.)"""
    params = {"from": utc_datetime(day_us), "to": utc_datetime(day_us + US_PER_DAY)}
    minutes = grain_rows_sql("minute", "window_start >= %(from)s AND window_start < %(to)s")
    hours = grain_rows_sql("hour", "hour_start >= %(from)s AND hour_start < %(to)s")
    key = "tenant_id AS t, sku AS k, cluster AS c"
    parts = [
        f"SELECT {_side(f'{key}, toUInt64(toUInt32(toStartOfHour(window_start))) AS at', x=True)} "
        f"FROM ({minutes}) AS minutes",
        f"SELECT {_side(f'{key}, toUInt64(toUInt32(hour_start)) AS at', x=False)} "
        f"FROM ({hours}) AS hours",
    ]
    by_hour = _compare(warehouse, " UNION ALL ".join(parts), params, "t, k, c, at")
    return by_hour + compare_days_day(warehouse, day_us)


# The fast path of a day's reconciliation -----------------------------------------------
# Grouping by three strings is most of the cost on 18.16; each (tenant, SKU, cluster) of
# the period is numbered instead (``transform``, exact: a key without a number, 0, sends
# the day to the detailed comparison). FINAL costs the ledger side four times its sum; a
# day whose ledger rows are all distinct (no replayed copy awaiting a merge) is summed
# without it. Only the counts come back; a day with any difference is compared again by
# compare_ledger_day and compare_grains_day, which name the keys.
_KEY_ID = "transform(concat(tenant_id, '/', sku, '/', cluster), %(keys)s, %(ids)s, 0)"
_IDENTITY = "tenant_id, sku, interval_start_us, node_id, boot_id, seq, gpu_uuid, gpu_index, job_id"


def period_keys(warehouse: Warehouse, start_us: int, end_us: int) -> list[str]:
    """Every tenant/SKU/cluster of the day rollups of [start_us, end_us)."""
    rows = warehouse.execute(
        "SELECT DISTINCT concat(tenant_id, '/', sku, '/', cluster) FROM usage_day_partials "
        "WHERE day >= %(first)s AND day < %(end)s",
        {"first": utc_datetime(start_us).date(), "end": utc_datetime(end_us).date()},
    )
    return sorted(k for (k,) in rows)


def _ledger_has_copies(warehouse: Warehouse, params: dict[str, Any]) -> bool:
    ((rows, distinct),) = warehouse.execute(
        f"SELECT count(), uniqExact(cityHash64({_IDENTITY})) FROM usage_ledger_holdings "
        f"WHERE {LEDGER_REPORTS}",
        params,
    )
    return int(rows) != int(distinct)  # a hash collision only costs the FINAL


def compare_days_day(warehouse: Warehouse, day_us: int) -> Comparison:
    """The hour rollups (x) against the day rollup (y) of the UTC day at ``day_us``."""
    params = {
        "from": utc_datetime(day_us),
        "to": utc_datetime(day_us + US_PER_DAY),
        "day": utc_datetime(day_us).date(),
    }
    hours = grain_rows_sql("hour", "hour_start >= %(from)s AND hour_start < %(to)s")
    days = grain_rows_sql("day", "day = %(day)s")
    key = "tenant_id AS t, sku AS k, cluster AS c"
    parts = [
        f"SELECT {_side(f'{key}, toUInt64(toUInt32(toStartOfDay(hour_start))) AS at', x=True)} "
        f"FROM ({hours}) AS hours",
        f"SELECT {_side(f'{key}, toUInt64(toUInt32(toDateTime(day))) AS at', x=False)} "
        f"FROM ({days}) AS days",
    ]
    return _compare(warehouse, " UNION ALL ".join(parts), params, "t, k, c, at")


def compare_month(warehouse: Warehouse, start_us: int, end_us: int) -> Comparison:
    """The day rollups (x) against the month rollups (y) per month of [start_us, end_us)
    (whole months): a few thousand rows a month, so it is always compared in full."""
    params = {"first": utc_datetime(start_us).date(), "end": utc_datetime(end_us).date()}
    days = grain_rows_sql("day", "day >= %(first)s AND day < %(end)s")
    months = grain_rows_sql("month", "month >= %(first)s AND month < %(end)s")
    key = "tenant_id AS t, sku AS k, cluster AS c"
    day_key = f"{key}, toUInt64(toUInt32(toDateTime(toStartOfMonth(day)))) AS at"
    month_key = f"{key}, toUInt64(toUInt32(toDateTime(month))) AS at"
    parts = [
        f"SELECT {_side(day_key, x=True)} FROM ({days}) AS days",
        f"SELECT {_side(month_key, x=False)} FROM ({months}) AS months",
    ]
    return _compare(warehouse, " UNION ALL ".join(parts), params, "t, k, c, at")


def compare_day(
    warehouse: Warehouse, day_us: int, keys: list[str]
) -> tuple[Comparison, Comparison]:
    """compare_ledger_day and compare_grains_day of the UTC day at ``day_us``, with one
    read of its minute rollups; ``keys`` from :func:`period_keys`."""
    params = {
        "w": US_PER_MINUTE,
        "from": utc_datetime(day_us),
        "to": utc_datetime(day_us + US_PER_DAY),
        "keys": keys,
        "ids": list(range(1, len(keys) + 1)),
        **ledger_params(day_us, day_us + US_PER_DAY),
    }
    final = " FINAL" if _ledger_has_copies(warehouse, params) else ""
    differs = " OR ".join(f"sx_{c} != sy_{c}" for c in _SIDES)
    per_minute = grain_rows_sql(
        "minute",
        "window_start >= %(from)s AND window_start < %(to)s",
        key=((_KEY_ID, "id"), ("toUInt64(toUInt32(window_start))", "at")),
    )
    minutes = f"SELECT {_side('id, at', x=False)} FROM ({per_minute}) AS per_minute"
    ledger_key = f"{_KEY_ID} AS id, toUInt64(intDiv(ls, %(w)s) * 60) AS at"
    ledger = (
        f"SELECT {_side(ledger_key, x=True, counters=('a', 'b', 'u', 'e', '1'))} "
        f"FROM {_LEDGER.replace(' FINAL', final)} WHERE {_ledger_range()}"
    )
    sums = ", ".join(f"sum(x_{c}) AS sx_{c}, sum(y_{c}) AS sy_{c}" for c in _SIDES)
    by_minute = (
        f"SELECT id, at, {sums}, ({differs}) AS differs "
        f"FROM ({ledger} UNION ALL {minutes}) AS sides GROUP BY id, at"
    )
    # Per hour: the minute keys and their differences, and the minutes' sums (x) against
    # the hour rollups (y).
    minute_sums = ", ".join(f"sum(sy_{c}) AS x_{c}, toUInt64(0) AS y_{c}" for c in _SIDES)
    hours = grain_rows_sql("hour", "hour_start >= %(from)s AND hour_start < %(to)s")
    hour_key = (
        f"{_KEY_ID} AS id, toUInt64(toUInt32(hour_start)) AS hr, toUInt64(0) AS minute_keys, "
        "toUInt64(0) AS minute_diffs"
    )
    hour_side = _side(hour_key, x=False)
    per_hour = (
        "SELECT id, intDiv(at, 3600) * 3600 AS hr, toUInt64(count()) AS minute_keys, "
        f"toUInt64(countIf(differs)) AS minute_diffs, {minute_sums} FROM ({by_minute}) AS m "
        f"GROUP BY id, hr UNION ALL SELECT {hour_side} FROM ({hours}) AS hours"
    )
    ((minute_keys, minute_diffs, hour_keys, hour_diffs, unknown),) = warehouse.execute(
        f"SELECT sum(mk), sum(md), count(), countIf({differs}), countIf(id = 0) FROM ("
        f"SELECT id, hr, sum(minute_keys) AS mk, sum(minute_diffs) AS md, {sums} "
        f"FROM ({per_hour}) AS hourly GROUP BY id, hr) AS compared",
        params,
    )
    days = compare_days_day(warehouse, day_us)
    if minute_diffs or hour_diffs or unknown or days.differing:
        return compare_ledger_day(warehouse, day_us), compare_grains_day(warehouse, day_us)
    return Comparison(int(minute_keys), 0, []), Comparison(int(hour_keys), 0, []) + days
