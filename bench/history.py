"""A synthetic, exactly known history of the warehouse, in the form the worker writes it.

``meter bench finance`` needs months of usage for many tenants without months of running
a fleet. Every row is computed in ClickHouse from a formula (``INSERT … SELECT`` over
``numbers()``, the same text on ClickHouse 18.16 and on current ClickHouse), a day at a
time, and the same formula evaluated here in numpy gives the exact totals every answer is
checked against.

The shape: ``tenants`` × ``skus`` × ``clusters`` × ``partitions`` minute partials per
minute, as a fleet of nodes writes them. Each (cluster, partition, SKU) has
``ceil(tenants / 8)`` nodes of 8 GPUs; GPU ``k`` of the group serves tenant ``k % tenants``
and reports one 60-second tick a minute, so a tenant's minute partial is the sum of its
GPUs' ticks. What the worker writes, and so what is here:

- minute partials with a superseded earlier version for a quarter of the keys, hour,
  day and month partials filled from them (``warehouse/backfill.py``, the worker's identity);
- late usage: about one minute key in a thousand gets an adjustment, recorded an hour
  later, and the ledger holds the late report behind it; as the worker does, the late
  piece is an adjustment of its hour too, but joins its day's and its month's partials
  unless those had closed by then (the last hour of a day, of a month);
- the ledger: a row per node report and GPU, and one per late report;
- seq gaps, some still open and some closed (an open version, then a closed one);
- rejected reports, each pipeline partition's state (caught up past the history), and a
  contract for every tenant (with a rate that changes inside a day).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np

from billing.contracts import ContractBook, parse_contract_book
from core.errors import ConfigError
from core.units import US_PER_DAY, US_PER_MINUTE, US_PER_SECOND, utc_datetime
from core.windows import month_end, month_start
from streams.output.native import LEDGER_COLUMNS, LEDGER_TABLE
from streams.processing.state import PartitionState
from warehouse.backfill import JOINING_MONTH_STATEMENTS as MONTH_STATEMENTS
from warehouse.backfill import JOINING_STATEMENTS as COARSE_STATEMENTS

TENANT_NAMES = ("aurora-labs", "borealis-ai", "cinder-research")
SKU_NAMES = ("H100", "H200", "B200", "H100-MIG-3g.40gb", "GB200", "A100")
CLUSTER_NAMES = ("sc1", "sc2", "sc3", "sc4")
CURRENCIES = ("USD", "EUR", "JPY", "GBP")
GPUS_PER_NODE = 8
HISTORY_END = datetime(2026, 11, 1, tzinfo=UTC)  # the last month is October 2026
# Ticks: 60 s; a GPU is half allocated in one minute of 13, unhealthy for 1 s in 1 of 101.
FULL_US, HALF_US = 60_000_000, 30_000_000
# Late usage: one (tenant, partition, minute) in 997, 5 s on another GPU, per SKU and cluster.
LATE_US, LATE_ENERGY_MJ = 5_000_000, 1_000


@dataclass(frozen=True)
class Shape:
    months: int = 3
    tenants: int = 20
    skus: int = 4
    clusters: int = 2
    partitions: int = 8

    def __post_init__(self) -> None:
        for name, value, most in (
            ("months", self.months, 24),
            ("tenants", self.tenants, 500),
            ("skus", self.skus, len(SKU_NAMES)),
            ("clusters", self.clusters, len(CLUSTER_NAMES)),
            ("partitions", self.partitions, 64),
        ):
            if not 1 <= value <= most:
                raise ConfigError(f"--{name} must be 1..{most}, got {value}")

    @property
    def tenant_ids(self) -> list[str]:
        named = list(TENANT_NAMES[: self.tenants])
        return named + [f"tenant-{i:03d}" for i in range(len(named), self.tenants)]

    @property
    def sku_names(self) -> list[str]:
        return list(SKU_NAMES[: self.skus])

    @property
    def cluster_names(self) -> list[str]:
        return list(CLUSTER_NAMES[: self.clusters])

    @property
    def gpus_per_group(self) -> int:
        """GPUs of one (cluster, partition, SKU): whole nodes, at least one per tenant."""
        return -(-self.tenants // GPUS_PER_NODE) * GPUS_PER_NODE

    @property
    def start(self) -> datetime:
        month = HISTORY_END.year * 12 + HISTORY_END.month - 1 - self.months
        return datetime(month // 12, month % 12 + 1, 1, tzinfo=UTC)

    @property
    def start_us(self) -> int:
        return int(self.start.timestamp()) * US_PER_SECOND

    @property
    def end_us(self) -> int:
        return int(HISTORY_END.timestamp()) * US_PER_SECOND

    def days(self) -> list[int]:
        return list(range(self.start_us, self.end_us, US_PER_DAY))

    @property
    def keys_per_minute(self) -> int:
        return self.tenants * self.skus * self.clusters * self.partitions


def _array(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


class HistorySql:
    """The generator's statements for one shape; each day's are run with that day's
    first minute (epoch minutes) substituted."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        sh = shape
        self._t, self._s, self._c, self._p = sh.tenants, sh.skus, sh.clusters, sh.partitions
        self._g = sh.gpus_per_group
        self._names = (
            f"{_array(sh.tenant_ids)} AS tenant_names, {_array(sh.sku_names)} AS sku_names, "
            f"{_array(sh.cluster_names)} AS cluster_names"
        )

    def _decompose(self) -> str:
        t, s, p = self._t, self._s, self._p
        k = t * s * self._c * p
        return (
            f"{{minute}} + intDiv(number, {k}) AS am, number % {k} AS r, r % {t} AS t, "
            f"intDiv(r, {t}) % {s} AS s, intDiv(r, {t * s}) % {p} AS p, "
            f"intDiv(r, {t * s * p}) AS c"
        )

    def _tenant_sums(self) -> str:
        """A tenant's minute sums over its GPUs ``k = t + tenants × j``."""
        t, g = self._t, self._g
        gpus = f"range({-(-g // t)})"
        k = f"(t + {t} * j)"
        mine = f"{k} < {g}"
        alloc = f"if((am + {k} + p) % 13 = 0, {HALF_US}, {FULL_US})"
        return (
            f"arraySum(arrayMap(j -> if({mine}, {alloc}, 0), {gpus})) AS a, "
            f"arraySum(arrayMap(j -> if({mine}, intDiv({alloc}, 2), 0), {gpus})) AS b, "
            f"arraySum(arrayMap(j -> if({mine} AND (am + 3 * {k}) % 101 = 0, 1000000, 0), "
            f"{gpus})) AS u, "
            f"arraySum(arrayMap(j -> if({mine}, 42000000 + (am % 7) * 1000, 0), {gpus})) AS e, "
            f"arraySum(arrayMap(j -> if({mine}, 1, 0), {gpus})) AS n"
        )

    def statements(self) -> list[str]:
        per_day = 1440 * self.shape.keys_per_minute
        rows = (
            f"FROM (SELECT {self._names}, {self._decompose()}, {self._tenant_sums()} "
            f"FROM numbers({per_day}))"
        )
        partial_cols = (
            "tenant_id, sku, cluster, window_start, source_partition, allocated_us, busy_us, "
            "unhealthy_us, energy_mj, sample_count, version, written_at"
        )
        adjust_cols = (
            "tenant_id, sku, cluster, window_start, source_partition, source_offset, "
            "allocated_us, busy_us, unhealthy_us, energy_mj, sample_count, recorded_at"
        )
        key = (
            "tenant_names[t + 1], sku_names[s + 1], cluster_names[c + 1], "
            "toDateTime(am * 60, 'UTC'), p"
        )
        late = "(am * 7 + t * 3 + p) % 997 = 0"
        return [
            # The final partial of every key, then a superseded one for a quarter of them.
            f"INSERT INTO usage_rollup_partials ({partial_cols}) SELECT {key}, a, b, u, e, n, "
            f"am * 10 + 5, toDateTime(am * 60 + 60, 'UTC') {rows}",
            f"INSERT INTO usage_rollup_partials ({partial_cols}) SELECT {key}, intDiv(a, 2), "
            f"intDiv(b, 2), 0, intDiv(e, 2), 1, am * 10 + 1, toDateTime(am * 60 + 30, 'UTC') "
            f"{rows} WHERE (am + t) % 4 = 0",
            f"INSERT INTO usage_adjustments ({adjust_cols}) SELECT {key}, am * 10 + 900000000, "
            f"{LATE_US}, {LATE_US // 2}, 0, {LATE_ENERGY_MJ}, 1, "
            f"toDateTime(am * 60 + 3600, 'UTC') {rows} WHERE {late}",
            self._ledger(),
            self._late_ledger(rows, late),
        ]

    _LEDGER_COLS = ", ".join(LEDGER_COLUMNS)

    def _ledger(self) -> str:
        """The ledger of each node report (8 GPUs, one 60 s tick each): a row per GPU."""
        nodes = self._g // GPUS_PER_NODE
        per_minute = self._c * self._p * self._s * nodes * GPUS_PER_NODE
        alloc = f"if((am + k + p) % 13 = 0, {HALF_US}, {FULL_US})"
        start = "toUInt64(am) * 60000000"
        return (
            f"INSERT INTO {LEDGER_TABLE} ({self._LEDGER_COLS}) SELECT "
            "concat(cluster_names[c + 1], '-node-', toString(p), '-', toString(s), '-', "
            "toString(q)), "
            f"'boot-1', toUInt64(am), cluster_names[c + 1], {start}, {start} + 60000000, "
            "toUInt32(p), toUInt64(am) * 10 + 5, "
            "concat('GPU-', toString(c), '-', toString(p), '-', toString(s), '-', "
            f"toString(k)), toUInt32(k), sku_names[s + 1], tenant_names[k % {self._t} + 1], '', "
            f"[{start}], [{start} + 60000000], [toUInt64({alloc})], "
            f"[toUInt64(intDiv({alloc}, 2))], "
            "[toUInt64(if((am + 3 * k) % 101 = 0, 1000000, 0))], "
            "[toUInt64(42000000 + (am % 7) * 1000)], [toUInt64(80000000000)], [toUInt8(0)] "
            f"FROM (SELECT {self._names}, sku_names[s + 1] AS sku_name, "
            f"{{minute}} + intDiv(number, {per_minute}) AS am, "
            f"number % {per_minute} AS r, r % {GPUS_PER_NODE} AS j, "
            f"intDiv(r, {GPUS_PER_NODE}) AS rn, rn % {nodes} AS q, q * 8 + j AS k, "
            f"intDiv(rn, {nodes}) % {self._s} AS s, "
            f"intDiv(rn, {nodes * self._s}) % {self._p} AS p, "
            f"intDiv(rn, {nodes * self._s * self._p}) AS c FROM numbers({1440 * per_minute}))"
        )

    def _late_ledger(self, rows: str, late: str) -> str:
        """The late report behind each adjustment: one sample on a spare GPU."""
        start = "toUInt64(am) * 60000000"
        return (
            f"INSERT INTO {LEDGER_TABLE} ({self._LEDGER_COLS}) SELECT "
            "concat('late-', cluster_names[c + 1], '-', toString(p)), 'boot-1', "
            f"toUInt64((am * {self._s} + s) * {self._t} + t), cluster_names[c + 1], {start}, "
            f"{start} + {LATE_US}, toUInt32(p), am * 10 + 900000000, "
            "concat('GPU-late-', toString(c), '-', toString(p), '-', toString(s), '-', "
            "toString(t)), "
            f"toUInt32(0), sku_names[s + 1], tenant_names[t + 1], '', [{start}], "
            f"[{start} + {LATE_US}], [toUInt64({LATE_US})], [toUInt64({LATE_US // 2})], "
            f"[toUInt64(0)], [toUInt64({LATE_ENERGY_MJ})], [toUInt64(80000000000)], [toUInt8(1)] "
            f"{rows} WHERE {late}"
        )


def fixed_rows(shape: Shape) -> list[str]:
    """Gaps, rejected reports and partition states: the same literal rows on both engines."""
    end_s = shape.end_us // US_PER_SECOND
    gap = (
        "INSERT INTO seq_gaps (node_id, boot_id, first_missing, last_missing, first_seen, "
        "is_open, source_partition, version, updated_at) VALUES "
    )
    seen = f"toDateTime({end_s - 86400}, 'UTC')"
    gaps = [
        f"('sc1-node-0-0-{i}', 'boot-1', {100 + i}, {102 + i}, {seen}, 1, {i}, 1, {seen})"
        for i in range(3)
    ] + [  # closed: an open version first, then the closed one
        f"('sc1-node-1-0-{i}', 'boot-1', 7, 9, {seen}, {is_open}, 1, {version}, {seen})"
        for i in range(2)
        for is_open, version in ((1, 1), (0, 2))
    ]
    rejected = (
        "INSERT INTO rejected_reports (source_topic, source_partition, source_offset, reason, "
        "detail, node_id, boot_id, seq, payload_size, payload_sha256, payload, rejected_at) "
        "VALUES "
    )
    rejects = [
        f"('usage', 0, {i}, '{reason}', 'generated', 'sc1-node-0-0-0', 'boot-1', {i}, 3, "
        f"'00', 'xyz', toDateTime({end_s - 3600 * (i + 1)}, 'UTC'))"
        for i, reason in enumerate(("unknown_sku", "unknown_sku", "future_timestamp"))
    ]
    # Each partition's progress and its snapshot, as the worker stores them.
    progress, snapshots = [], []
    written_at = f"toDateTime({end_s + 3600}, 'UTC')"
    for p in range(shape.partitions):
        last = (shape.end_us // US_PER_MINUTE - 1) * 10 + 5
        state = PartitionState("usage", p, applied_offset=last)
        state.closed_before_us = shape.end_us + 3600 * US_PER_SECOND
        progress.append(
            f"('usage', {p}, {last}, 0, 0, 0, 0, 0, 0, {state.closed_before_us}, {written_at})"
        )
        snapshots.append(
            f"('usage', {p}, {last}, unhex('{state.to_snapshot().hex()}'), {written_at})"
        )
    progress_sql = (
        "INSERT INTO partition_state (topic, partition, applied_offset, accepted_reports, "
        "accepted_samples, duplicate_reports, late_reports, rejected_reports, open_gaps, "
        "closed_before_us, written_at) VALUES "
    )
    snapshot_sql = (
        "INSERT INTO partition_snapshots (topic, partition, applied_offset, state, written_at) "
        "VALUES "
    )
    return [
        gap + ", ".join(gaps),
        rejected + ", ".join(rejects),
        progress_sql + ", ".join(progress),
        snapshot_sql + ", ".join(snapshots),
    ]


OPEN_GAPS = 3
REJECTED = {"unknown_sku": 2, "future_timestamp": 1}


def contract_book(shape: Shape) -> ContractBook:
    """A contract per tenant over the whole history: rates per SKU, a minimum, energy
    passed through for every other tenant, and for the first tenant a rate that changes
    inside a day of the last month."""
    tenants, contracts = [], []
    for i, tenant in enumerate(shape.tenant_ids):
        currency = CURRENCIES[i % len(CURRENCIES)]
        places = 0 if currency == "JPY" else 2
        scale = 150 if currency == "JPY" else 1
        rates: list[dict[str, Any]] = [
            {"sku": sku, "rate_per_gpu_hour": f"{(2 + j + i / 100) * scale:.{places}f}"}
            for j, sku in enumerate(shape.sku_names)
        ]
        if i == 0:
            rates.append(
                {
                    "sku": shape.sku_names[0],
                    "effective_from": "2026-10-16T06:30:00Z",
                    "rate_per_gpu_hour": f"{3 * scale:.{places}f}",
                }
            )
        contract: dict[str, Any] = {
            "contract_id": f"C-{tenant}",
            "tenant_id": tenant,
            "currency": currency,
            "term": {"start": shape.start.date().isoformat(), "end": "2027-11-01"},
            "committed_gpus": 2 + i % 5,
            "minimum_monthly_commitment": f"{(1000 + 10 * i) * scale:.{places}f}",
            "sla_credit_multiplier": "1",
            "rates": rates,
            "payment_terms_days": 30,
        }
        if i % 2 == 0:
            contract["energy_rate_per_kwh"] = f"{0.12 * scale:.{places}f}"
        tenants.append({"tenant_id": tenant, "name": f"{tenant} (generated)"})
        contracts.append(contract)
    return parse_contract_book({"tenants": tenants, "contracts": contracts})


@dataclass
class Expected:
    """Exact totals of the generated usage, per (tenant, day) for one (SKU, cluster): the
    formula does not depend on either, so every (SKU, cluster) holds the same."""

    shape: Shape
    # counter -> array [tenant, day] of the sum over partitions, late usage included
    by_day: dict[str, np.ndarray] = field(default_factory=dict)
    late_by_day: np.ndarray | None = None  # [tenant, day]: late samples

    def day_index(self, day_us: int) -> int:
        return (day_us - self.shape.start_us) // US_PER_DAY


COUNTERS = ("allocated_us", "busy_us", "unhealthy_us", "energy_mj", "sample_count")


def minute_sums(shape: Shape, first_minute: int, minutes: int) -> dict[str, np.ndarray]:
    """The generated minute partials' final values: counter -> [partition, tenant, minute]
    (the same for every SKU and cluster), late usage not included."""
    am = np.arange(first_minute, first_minute + minutes, dtype=np.int64)
    t_count, g = shape.tenants, shape.gpus_per_group
    out = {c: np.zeros((shape.partitions, t_count, minutes), np.int64) for c in COUNTERS}
    for k in range(g):
        t = k % t_count
        unhealthy = np.where((am + 3 * k) % 101 == 0, 1_000_000, 0)
        energy = 42_000_000 + (am % 7) * 1000
        for p in range(shape.partitions):
            alloc = np.where((am + k + p) % 13 == 0, HALF_US, FULL_US)
            out["allocated_us"][p, t] += alloc
            out["busy_us"][p, t] += alloc // 2
            out["unhealthy_us"][p, t] += unhealthy
            out["energy_mj"][p, t] += energy
            out["sample_count"][p, t] += 1
    return out


def late_mask(shape: Shape, first_minute: int, minutes: int) -> np.ndarray:
    """[partition, tenant, minute]: where the generator put a late adjustment."""
    am = np.arange(first_minute, first_minute + minutes, dtype=np.int64)
    p = np.arange(shape.partitions, dtype=np.int64)[:, None, None]
    t = np.arange(shape.tenants, dtype=np.int64)[None, :, None]
    return (am[None, None, :] * 7 + t * 3 + p) % 997 == 0


def expected_totals(shape: Shape) -> Expected:
    expected = Expected(shape)
    days = shape.days()
    expected.by_day = {c: np.zeros((shape.tenants, len(days)), np.int64) for c in COUNTERS}
    expected.late_by_day = np.zeros((shape.tenants, len(days)), np.int64)
    late_values = {
        "allocated_us": LATE_US,
        "busy_us": LATE_US // 2,
        "unhealthy_us": 0,
        "energy_mj": LATE_ENERGY_MJ,
        "sample_count": 1,
    }
    for d, day_us in enumerate(days):
        first = day_us // US_PER_MINUTE
        sums = minute_sums(shape, first, 1440)
        late = late_mask(shape, first, 1440).sum(axis=(0, 2))
        for c in COUNTERS:
            expected.by_day[c][:, d] = sums[c].sum(axis=(0, 2)) + late * late_values[c]
        expected.late_by_day[:, d] = late
    return expected


def build(
    run: Callable[[str], object],
    shape: Shape,
    progress: Callable[[str], None],
    days: Iterator[int] | None = None,
) -> None:
    """Generate the history through ``run`` (one statement at a time), a day at a time."""
    statements = HistorySql(shape).statements()
    all_days = list(days) if days is not None else shape.days()
    for n, day_us in enumerate(all_days, start=1):
        for sql in statements:
            run(sql.replace("{minute}", str(day_us // US_PER_MINUTE)))
        # The hour and day rollups of the day, as the worker writes them beside the minutes.
        first, end = (
            f"'{utc_datetime(t):%Y-%m-%d %H:%M:%S}'" for t in (day_us, day_us + US_PER_DAY)
        )
        for sql in COARSE_STATEMENTS:
            run(sql.replace("%(from)s", first).replace("%(to)s", end))
        if n == len(all_days) or month_start(all_days[n]) != month_start(day_us):
            # The month's rollups once its last day is in, as the worker's final partials.
            month_first, month_end_day = (
                f"'{utc_datetime(t):%Y-%m-%d}'"
                for t in (month_start(day_us), month_end(month_start(day_us)))
            )
            for sql in MONTH_STATEMENTS:
                run(sql.replace("%(from)s", month_first).replace("%(to)s", month_end_day))
        if n % 10 == 0 or n == len(all_days):
            progress(
                f"history: {n}/{len(all_days)} days generated (through "
                f"{utc_datetime(day_us).date()})"
            )
    for sql in fixed_rows(shape):
        run(sql)


def decimal_hours(value_us: int) -> Decimal:
    """``toDecimal128(x, 9) / 3600000000`` as ClickHouse computes it: truncated to 9 places."""
    return (Decimal(value_us) / 3_600_000_000).quantize(Decimal("1e-9"), rounding="ROUND_DOWN")
