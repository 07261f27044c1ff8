"""The agent's attribution of GPU time to tenants (agent/allocation.py, agent/report.py):
exact splits at any holder change, and the allocation file's formats and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.allocation import AllocationFile, Assignment, Attribution, Holder, parse_allocations
from agent.collectors import GpuUnit, TickReading
from agent.errors import AllocationError
from agent.report import tick_samples
from core.identity import ReportLimits
from streams.processing.validate import validate_report

T0 = 1_800_000_000_000_000
TICK = 10_000_000
UNIT = GpuUnit("GPU-0000", 0, "H100")


def test_tenant_switch_mid_tick_splits_exactly() -> None:
    attribution = Attribution([UNIT], T0)
    attribution.observe({UNIT.uuid: Assignment(Holder("aurora-labs", "a-1"), T0)}, T0, T0)
    switch = T0 + 3_700_001
    attribution.observe(
        {UNIT.uuid: Assignment(Holder("borealis-ai", "b-7"), switch)}, T0 + TICK, T0
    )
    pieces = attribution.pieces(UNIT.uuid, T0, T0 + TICK)
    reading = TickReading(
        UNIT, busy_us=9_999_999, unhealthy=True, energy_mj=7_000_003, memory_peak_bytes=5
    )
    samples = tick_samples(reading, pieces, T0, T0 + TICK)
    assert [
        (s["tenant_id"], s["job_id"], s["tick_start_us"], s["tick_end_us"], s["allocated_us"])
        for s in samples
    ] == [
        ("aurora-labs", "a-1", T0, switch, 3_700_001),
        ("borealis-ai", "b-7", switch, T0 + TICK, TICK - 3_700_001),
    ]
    assert sum(s["allocated_us"] for s in samples) == TICK
    assert sum(s["busy_us"] for s in samples) == 9_999_999
    assert sum(s["energy_mj"] for s in samples) == 7_000_003
    assert [s["unhealthy_us"] for s in samples] == [3_700_001, TICK - 3_700_001]
    # The aurora piece: floor(9,999,999 × 3,700,001 / 10^7) by the cumulative-floor rule.
    assert samples[0]["busy_us"] == 9_999_999 * 3_700_001 // TICK
    report = {
        "node_id": "n1",
        "boot_id": "b1",
        "seq": 0,
        "cluster": "sc1",
        "interval_start_us": T0,
        "interval_end_us": T0 + TICK,
        "samples": samples,
    }
    validate_report(report, ReportLimits(), T0 + TICK)  # the pipeline accepts the split


@settings(max_examples=200, deadline=None)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, TICK), st.sampled_from(["a", "b", "unallocated"])), max_size=6
    ),
    busy=st.integers(0, TICK),
    energy=st.integers(0, 10**10),
    unhealthy=st.booleans(),
)
def test_any_holder_changes_keep_every_microsecond_and_counter(
    changes: list[tuple[int, str]], busy: int, energy: int, unhealthy: bool
) -> None:
    attribution = Attribution([UNIT], T0)
    for at, tenant in sorted(changes):
        attribution.observe({UNIT.uuid: Assignment(Holder(tenant), T0 + at)}, T0 + at, T0)
    pieces = attribution.pieces(UNIT.uuid, T0, T0 + TICK)
    samples = tick_samples(TickReading(UNIT, busy, unhealthy, energy, 0), pieces, T0, T0 + TICK)
    assert sum(s["allocated_us"] for s in samples) == TICK
    assert sum(s["busy_us"] for s in samples) == busy
    assert sum(s["energy_mj"] for s in samples) == energy
    assert sum(s["unhealthy_us"] for s in samples) == (TICK if unhealthy else 0)
    assert all(s["busy_us"] <= s["allocated_us"] for s in samples)
    starts = [s["tick_start_us"] for s in samples]
    assert starts == sorted(set(starts))  # no two samples of a GPU share a tick start


def test_allocation_file_formats_and_refusals(tmp_path: Path) -> None:
    units = [GpuUnit("GPU-a", 0, "H100"), GpuUnit("GPU-b", 1, "H100")]
    doc = {
        "allocations": [
            {"gpu": "GPU-a", "tenant_id": "aurora-labs", "job_id": "j1", "since_us": T0},
            {"gpu": "1", "tenant_id": "borealis-ai"},
        ]
    }
    parsed = parse_allocations(json.dumps(doc), ".json", units)
    assert parsed["GPU-a"] == Assignment(Holder("aurora-labs", "j1"), T0)
    assert parsed["GPU-b"] == Assignment(Holder("borealis-ai", ""), None)
    csv_text = f"gpu,tenant_id,job_id,since_us\nGPU-b,cinder-research,c9,{T0}\n"
    assert parse_allocations(csv_text, ".csv", units)["GPU-b"].holder.tenant_id == "cinder-research"
    bad = [
        ('{"allocations": [{"gpu": "GPU-zz", "tenant_id": "x"}]}', "not a unit"),
        ('{"allocations": [{"gpu": "0", "tenant_id": "Bad Tenant"}]}', "not a valid tenant"),
        (
            '{"allocations": [{"gpu": "0", "tenant_id": "a"}, {"gpu": "GPU-a", "tenant_id": "b"}]}',
            "listed twice",
        ),
        ('{"allocations": [{"gpu": "0", "tenant_id": "a", "since_us": "soon"}]}', "integer"),
        ("{not json", "not JSON"),
    ]
    for text, message in bad:
        with pytest.raises(AllocationError, match=message):
            parse_allocations(text, ".json", units)
    path = tmp_path / "alloc.json"
    source = AllocationFile(path, units)
    with pytest.raises(AllocationError, match=r"alloc\.json does not exist"):
        source.current()  # an error, every time it is asked, until the file appears
    path.write_text(json.dumps(doc))
    assert source.current()["GPU-a"].holder.tenant_id == "aurora-labs"
