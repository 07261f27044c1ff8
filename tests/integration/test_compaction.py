"""A closed month compacted (``meter compact``) and reconciled in one pass per table, on the
real server: the same counts as the day-by-day comparison, and every kind of difference
still found and named, a window moved inside a day included."""

from __future__ import annotations

import pytest

from billing.reconcile import reconcile
from schemas import ReportCodec
from streams.contract import ProcessorSettings, SourceMessage
from streams.output.native import LEDGER_COLUMNS, LEDGER_TABLE
from streams.output.sink import WarehouseSink
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.state import PartitionState
from tests.factories import TICK_US, make_report, make_sample
from tests.mutations import mutate
from warehouse.compaction import compact, not_compacted, partitions_read
from warehouse.month_check import compare_compacted
from warehouse.totals import compare_day, period_keys

pytestmark = pytest.mark.integration

T0_US = 1_793_491_200_000_000  # 2026-11-01 00:00 UTC
DAY_US = 86_400_000_000
MINUTE_US = 60_000_000
PERIOD = "2026-11"
MONTH_END_US = 1_796_083_200_000_000  # 2026-12-01


def _fill(warehouse) -> None:
    """Two nodes' reports in the same minutes of two days and many hours, the second
    node's in a later batch (so every minute partial has a superseded version), and a
    replayed copy of the first batch's ledger awaiting its merge."""
    codec = ReportCodec()
    batches: list[list[SourceMessage]] = [[], []]
    for n in range(48):
        minute_us = T0_US + n * 61 * MINUTE_US
        tenant, sku = ("aurora-labs", "H100") if n % 3 else ("borealis-ai", "B200")
        for node in range(2):
            samples = [
                make_sample(
                    minute_us + t * TICK_US,
                    tenant_id=tenant,
                    sku=sku,
                    gpu_uuid=f"GPU-{g}",
                    gpu_index=g,
                    energy_mj=n + g + node,
                )
                for t in range(6)
                for g in range(2)
            ]
            report = make_report(samples, seq=n, node_id=f"sc1-node-{node}")
            offset = node * 48 + n
            batches[node].append(
                SourceMessage("usage", 0, offset, None, codec.encode(report), T0_US + 3 * DAY_US)
            )
    processor = FastPartitionProcessor(
        PartitionState("usage", 0), ProcessorSettings(lateness_us=10**12)
    )
    sink = WarehouseSink(warehouse)
    first = processor.process(batches[0])
    sink.write(first, processor.state)
    sink.write(processor.process(batches[1]), processor.state)
    warehouse.insert_native(LEDGER_TABLE, LEDGER_COLUMNS, bytes(first.ledger), first.ledger_rows)


def _shift(warehouse, table: str, column: str, where: str, delta: int) -> None:
    mutate(
        warehouse,
        f"ALTER TABLE {table} UPDATE {column} = toUInt64({column} + {delta}) WHERE {where}",
    )


def _day_by_day(warehouse) -> tuple[int, int]:
    keys = period_keys(warehouse, T0_US, MONTH_END_US)
    windows = grains = 0
    for day_us in range(T0_US, MONTH_END_US, DAY_US):
        ledger, coarse = compare_day(warehouse, day_us, keys)
        assert ledger.differing == coarse.differing == 0
        windows, grains = windows + ledger.keys, grains + coarse.keys
    return windows, grains


def test_a_compacted_month_is_reconciled_in_one_pass_and_still_finds_every_difference(warehouse):
    _fill(warehouse)
    partitions = partitions_read(T0_US, MONTH_END_US)
    assert partitions == ["202610", "202611"]
    assert "usage_ledger_holdings/202611" in not_compacted(warehouse, partitions)
    text = "\n".join(reconcile(warehouse, PERIOD, recheck=True).lines)
    assert "OK   48 windows, every counter equal" in text and "compared day by day" in text
    expected = _day_by_day(warehouse)
    assert expected == (48, 48 + 4)

    merged = compact(warehouse, partitions, progress=lambda line: None)
    assert "usage_rollup_partials/202611" in merged and not not_compacted(warehouse, partitions)
    assert compact(warehouse, partitions, progress=lambda line: None) == []
    # The same counts, in one pass, with no day to compare again.
    assert compare_compacted(warehouse, T0_US, MONTH_END_US) == (*expected, set())
    text = "\n".join(reconcile(warehouse, PERIOD, recheck=True).lines)
    assert "OK   48 windows, every counter equal" in text and "day by day" not in text

    def differing_days() -> set[int]:
        found = compare_compacted(warehouse, T0_US, MONTH_END_US)[2]
        assert not not_compacted(warehouse, partitions)  # a mutation keeps one merged part
        return found

    # A minute's allocation moved to another minute of the same day and key: every plain
    # sum of the day is unchanged, only the per-window comparison can see it.
    first, later = (f"toDateTime({(T0_US + k * 61 * MINUTE_US) // 1_000_000})" for k in (1, 4))
    aurora = "AND tenant_id = 'aurora-labs'"
    for delta in (7, -7):
        _shift(
            warehouse,
            "usage_rollup_partials",
            "allocated_us",
            f"window_start = {first} {aurora}",
            delta,
        )
        _shift(
            warehouse,
            "usage_rollup_partials",
            "allocated_us",
            f"window_start = {later} {aurora}",
            -delta,
        )
        if delta > 0:
            assert differing_days() == {T0_US}
            report = reconcile(warehouse, PERIOD, recheck=True)
            text = "\n".join(report.lines)
            assert not report.ledger_ok and "allocated_us ledger=" in text
            assert f"window {(T0_US + 61 * MINUTE_US) // 1_000_000}: allocated_us" in text
    assert differing_days() == set()
    # The same inside the hour rollups of the second day (the minutes are right).
    hours = [f"toDateTime({(T0_US + DAY_US + k * 3_600_000_000) // 1_000_000})" for k in (1, 5)]
    for delta in (3, -3):
        _shift(warehouse, "usage_hour_partials", "busy_us", f"hour_start = {hours[0]}", delta)
        _shift(warehouse, "usage_hour_partials", "busy_us", f"hour_start = {hours[1]}", -delta)
        assert differing_days() == ({T0_US + DAY_US} if delta > 0 else set())
    # A day rollup off, then a ledger sample missing.
    for delta in (1, -1):
        _shift(warehouse, "usage_day_partials", "energy_mj", "day = toDate('2026-11-02')", delta)
        assert differing_days() == ({T0_US + DAY_US} if delta > 0 else set())
    mutate(warehouse, "ALTER TABLE usage_ledger_holdings DELETE WHERE seq = 30")
    assert differing_days() == {T0_US + DAY_US}
    # Late usage after compaction: the month is compared day by day again.
    _fill(warehouse)
    assert not_compacted(warehouse, partitions)
    text = "\n".join(reconcile(warehouse, PERIOD, recheck=True).lines)
    assert "compared day by day" in text


def test_meter_compact_merges_a_closed_month_and_refuses_an_open_one(warehouse, capsys):
    from datetime import UTC, datetime

    from billing.commands import compact_period
    from billing.errors import BillingError

    _fill(warehouse)
    clock = lambda: datetime(2026, 11, 20, tzinfo=UTC)  # noqa: E731
    with pytest.raises(BillingError, match="2026-11 is not over yet"):
        compact_period(warehouse.settings, PERIOD, clock=clock)
    assert not_compacted(warehouse, partitions_read(T0_US, MONTH_END_US))
    assert compact_period(warehouse.settings, PERIOD) == 0
    out = capsys.readouterr().out
    assert "compact: usage_ledger_holdings/202611 merged in" in out
    assert "2026-11: 4 partitions merged" in out
    assert not not_compacted(warehouse, partitions_read(T0_US, MONTH_END_US))


def test_reconcile_finds_a_month_rollup_that_is_not_the_sum_of_its_days(warehouse):
    _fill(warehouse)
    text = "\n".join(reconcile(warehouse, PERIOD).lines)
    # Two tenant/SKU keys in November, each compared with its days.
    assert "month rollups vs days\n  OK   2 months, every counter equal" in text
    _shift(warehouse, "usage_month_partials", "unhealthy_us", "tenant_id = 'borealis-ai'", 5)
    report = reconcile(warehouse, PERIOD)
    text = "\n".join(report.lines)
    assert not report.ledger_ok and "FAIL 1 differences over 2 months" in text
    month_s = T0_US // 1_000_000
    assert f"borealis-ai B200 sc1 window {month_s}: unhealthy_us days=0 month=5" in text
