"""A compacted period's reconciliation: one scan of each table, per key and day.

``warehouse/totals.compare_day`` compares a day key by key and window by window: it must
deduplicate every table (``argMax`` over partial versions, ``FINAL`` or a duplicate
check on the ledger) and group millions of (tenant, SKU, cluster, minute) keys, about
2.4 s a day of a mid-sized fleet on two cores. Over a compacted month
(``warehouse/compaction.py``: one merged part per partition, each key once) no read needs
deduplicating, and each table is summed once per (tenant, SKU, cluster, day), a few
thousand groups, with, beside every plain sum, weighted sums that stand for the per-window
comparison:

    sum over the day's windows w of  weight(w) × value(w)   (UInt64, wrapping)

with ``weight = intHash64(window number)``. The same weighted sum over a finer table's rows
(the ledger's samples for minutes, minutes for hours) equals it exactly when every window
agrees (the product distributes over the sum modulo 2^64); windows that differ change it
unless the differences happen to cancel under 64-bit hash weights, which for any fixed
differences has a probability of about 2^-64. The plain sums are compared exactly as well.
A day where anything differs is compared again window by window (``compare_ledger_day``,
``compare_grains_day``), which names what differs.
"""

from __future__ import annotations

from typing import Any

from core.units import US_PER_DAY, utc_datetime
from warehouse.client import Warehouse
from warehouse.totals import FIELDS, GRAIN_TABLES, LEDGER_REPORTS, ledger_params

DayKey = tuple[str, str, str, int]  # tenant_id, sku, cluster, day number (UTC, since 1970)
Sums = dict[DayKey, tuple[int, ...]]

_W_MINUTE = "intHash64(toUInt64(intDiv(toUInt32({col}), 60)))"
_W_HOUR = "intHash64(toUInt64(intDiv(toUInt32({col}), 3600)))"
_DAY = "intDiv(toUInt32({col}), 86400)"


def _sums(weights: tuple[str, ...], counters: tuple[str, ...] = FIELDS) -> list[str]:
    """Per counter: its plain sum, then one weighted sum per weight."""
    out = []
    for c in counters:
        out.append(f"sum(toUInt64({c}))")
        out.extend(f"sum(toUInt64({c}) * {w})" for w in weights)
    return out


def _rollup_sums(
    warehouse: Warehouse,
    grain: str,
    params: dict[str, Any],
    weights: tuple[str, ...],
    windows: str,
) -> tuple[Sums, int]:
    """Partials and late usage of ``grain`` summed per key and day, read as stored (the
    period is compacted); and how many (key, ``windows``) they cover."""
    partials, adjustments, column = GRAIN_TABLES[grain]
    at = "toDateTime(day)" if grain == "day" else column
    lo, hi = ("%(from_day)s", "%(to_day)s") if grain == "day" else ("%(from)s", "%(to)s")
    rows_of = (
        f"SELECT tenant_id, sku, cluster, {at} AS at, {', '.join(FIELDS)} FROM {{table}} "
        f"WHERE {column} >= {lo} AND {column} < {hi}"
    )
    sums = _sums(tuple(w.format(col="at") for w in weights))
    count = f"uniqExact({windows.format(col='at')})" if windows else "toUInt64(0)"
    rows = warehouse.execute(
        f"SELECT tenant_id, sku, cluster, {_DAY.format(col='at')} AS d, {count}, "
        f"{', '.join(sums)} FROM ({rows_of.format(table=partials)} UNION ALL "
        f"{rows_of.format(table=adjustments)}) AS stored GROUP BY tenant_id, sku, cluster, d",
        params,
    )
    out: Sums = {}
    covered = 0
    for t, s, c, d, n, *values in rows:
        out[(t, s, c, int(d))] = tuple(int(v) for v in values)
        covered += int(n)
    return out, covered


def _ledger_sums(warehouse: Warehouse, params: dict[str, Any]) -> Sums:
    """The ledger's samples with ticks in the period, summed per key and day, plain and
    weighted by their minute, as stored (compacted: each sample once)."""
    minute = "intHash64(toUInt64(intDiv(ls, 60000000)))"
    counters = ("a", "b", "u", "e", "toUInt64(1)")
    rows = warehouse.execute(
        f"SELECT tenant_id, sku, cluster, intDiv(ls, {US_PER_DAY}) AS d, "
        f"{', '.join(_sums((minute,), counters))} FROM usage_ledger_holdings "
        "ARRAY JOIN tick_start_us AS ls, allocated_us AS a, busy_us AS b, unhealthy_us AS u, "
        f"energy_mj AS e WHERE {LEDGER_REPORTS} AND ls >= %(start)s AND ls < %(end)s "
        "GROUP BY tenant_id, sku, cluster, d",
        params,
    )
    return {(t, s, c, int(d)): tuple(int(v) for v in values) for t, s, c, d, *values in rows}


def _pick(values: tuple[int, ...], width: int, which: int) -> tuple[int, ...]:
    """Per counter, its plain sum and the ``which``-th weighted sum (0: the plain sum
    only) of ``values`` laid out by :func:`_sums` with ``width - 1`` weights."""
    out: list[int] = []
    for i in range(len(FIELDS)):
        out.append(values[i * width])
        if which:
            out.append(values[i * width + which])
    return tuple(out)


def _differing_days(left: Sums, right: Sums, keep: int) -> set[int]:
    zero = (0,) * keep
    return {
        key[3] for key in left.keys() | right.keys() if left.get(key, zero) != right.get(key, zero)
    }


def compare_compacted(
    warehouse: Warehouse, start_us: int, end_us: int
) -> tuple[int, int, set[int]]:
    """The ledger against the minute rollups (per minute), the minutes against the hours
    (per hour) and the hours against the days, for [start_us, end_us) of whole UTC days
    over compacted partitions: the minute windows and the hour and day windows covered,
    and the start (µs) of each day where anything differs."""
    params = {
        "from": utc_datetime(start_us),
        "to": utc_datetime(end_us),
        "from_day": utc_datetime(start_us).date(),
        "to_day": utc_datetime(end_us).date(),
        **ledger_params(start_us, end_us),
    }
    minutes, minute_windows = _rollup_sums(
        warehouse, "minute", params, (_W_MINUTE, _W_HOUR), _W_MINUTE
    )
    hours, hour_windows = _rollup_sums(warehouse, "hour", params, (_W_HOUR,), _W_HOUR)
    days, _ = _rollup_sums(warehouse, "day", params, (), "")
    ledger = _ledger_sums(warehouse, params)
    n = len(FIELDS)
    differing = _differing_days(ledger, {k: _pick(v, 3, 1) for k, v in minutes.items()}, 2 * n)
    differing |= _differing_days(
        {k: _pick(v, 3, 2) for k, v in minutes.items()},
        {k: _pick(v, 2, 1) for k, v in hours.items()},
        2 * n,
    )
    differing |= _differing_days({k: _pick(v, 2, 0) for k, v in hours.items()}, days, n)
    return minute_windows, hour_windows + len(days), {d * US_PER_DAY for d in differing}
