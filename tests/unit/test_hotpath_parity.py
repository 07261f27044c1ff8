"""The hot path against its readable twin: identical outcomes on random input.

Random fleets with duplicates, gaps, garbage, truncations, schema-valid edge values
(zero, int64 max, samples straddling windows, late reports) and random batch cuts. The
whole BatchOutcome must be equal (ledger bytes, rollups, adjustments, gaps, rejections
with reason and detail, counters), and so must the partition states after every batch.
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.units import US_PER_MINUTE, US_PER_SECOND
from schemas import ReportCodec, load_released_versions
from streams.contract import ProcessorSettings, SourceMessage
from streams.processing.hotpath.processor import FastPartitionProcessor
from streams.processing.processor import PartitionProcessor
from streams.processing.state import PartitionState
from tests.factories import NOW_US, make_report, make_sample
from tests.malformed import malformed_messages

CODEC = ReportCodec()
T0 = make_sample()["tick_start_us"]
INT64_MAX = 2**63 - 1

tick_us = st.sampled_from(
    [10 * US_PER_SECOND, 10 * US_PER_SECOND, 7 * US_PER_SECOND, 45 * US_PER_SECOND, 1]
)
MAX_POWER_MW = 10_000_000
MAX_MEMORY = 2**41

# One defect a report may carry, as (field, value); None: the report is valid.
DEFECTS = [
    ("tenant_id", "Bad Tenant"),
    ("tenant_id", ""),
    ("sku", "Z9"),
    ("job_id", "j" * 257),
    ("gpu_index", 2**31),
    ("busy_us", "over"),
    ("energy_mj", "over"),
    ("allocated_us", -1),
    ("memory_peak_bytes", MAX_MEMORY + 1),
    ("gpu_uuid", "bad gpu"),
    ("tick_end_us", "early"),
]


@st.composite
def sample(draw, start: int) -> dict:
    tick = draw(tick_us)
    allocated = draw(st.sampled_from([tick, 0, tick // 2, tick - 1 if tick > 1 else tick]))
    s = make_sample(
        start + draw(st.integers(0, 30)) * 5 * US_PER_SECOND,
        gpu_uuid=f"GPU-{draw(st.integers(0, 5))}",
        gpu_index=draw(st.sampled_from([0, 1, 7, 2**31 - 1])),
        sku=draw(st.sampled_from(["H100", "B200"])),
        tenant_id=draw(st.sampled_from(["aurora-labs", "borealis-ai", "unallocated"])),
        job_id=draw(st.sampled_from(["", "job-1", "j" * 256, "jöb-ü"])),
        allocated_us=allocated,
        busy_us=draw(st.sampled_from([0, allocated, allocated // 3])),
        unhealthy_us=draw(st.sampled_from([0, allocated])),
        energy_mj=draw(st.sampled_from([0, 1, 123_456, MAX_POWER_MW * tick // US_PER_SECOND])),
        memory_peak_bytes=draw(st.sampled_from([0, 2**30, MAX_MEMORY])),
    )
    s["tick_end_us"] = s["tick_start_us"] + tick
    return s


def _inject(report: dict, field: str, value: object) -> None:
    target = report["samples"][-1]
    if value == "over":
        target[field] = target["allocated_us"] + 1 if field == "busy_us" else 2**62
    elif value == "early":
        target["tick_end_us"] = target["tick_start_us"]
    else:
        target[field] = value


@st.composite
def tiled_samples(draw, node: str, start: int) -> tuple[list[dict], int]:
    """Samples of some of the node's GPUs over consecutive ticks from ``start`` (as agents
    report: tick by tick, each GPU in turn), and where they end."""
    tick = draw(tick_us)
    ticks = draw(st.integers(1, 3))
    gpus = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True))
    samples = []
    for t in range(ticks):
        for g in gpus:
            s = draw(sample(start))
            s.update(gpu_uuid=f"GPU-{node}-{g}", tick_start_us=start + t * tick)
            s["tick_end_us"] = s["tick_start_us"] + tick
            s["allocated_us"] = min(s["allocated_us"], tick)
            s["busy_us"] = min(s["busy_us"], s["allocated_us"])
            s["unhealthy_us"] = min(s["unhealthy_us"], s["allocated_us"])
            s["energy_mj"] = min(s["energy_mj"], MAX_POWER_MW * tick // US_PER_SECOND)
            samples.append(s)
    return samples, start + ticks * tick


@st.composite
def report_frames(draw) -> list[bytes]:
    """Reports of three nodes (and a bad one) whose GPUs mostly tile time: now and then a
    report overlaps time already reported, leaves a hole or fills one late, lists its
    ticks out of order, or is a random jumble of overlapping ticks."""
    frames = []
    next_seq = {"sc1-node-1": 0, "sc1-node-2": 0, "sc1-node-3": 0}
    clock = dict.fromkeys(next_seq, T0)
    for _ in range(draw(st.integers(1, 25))):
        node = draw(st.sampled_from([*next_seq] * 6 + ["bad node"]))
        seq = next_seq.get(node, 0) + draw(st.sampled_from([0, 0, 0, 1, 3, -2]))
        next_seq[node] = max(next_seq.get(node, 0), seq + 1)
        timing = draw(st.sampled_from(["next"] * 6 + ["hole", "back", "jumble"]))
        begin_us = clock.get(node, T0)
        if timing == "hole":
            begin_us += draw(st.integers(1, 90)) * US_PER_SECOND
        elif timing == "back":  # overlaps what came before, or fills a hole late
            begin_us -= draw(st.integers(1, 300)) * US_PER_SECOND
        if timing == "jumble":
            minute = draw(st.integers(0, 40))
            samples = draw(
                st.lists(
                    sample(T0 + minute * US_PER_MINUTE),
                    max_size=8,
                    unique_by=lambda s: (s["gpu_uuid"], s["tick_start_us"]),
                )
            )
        else:
            samples, end = draw(tiled_samples(node, begin_us))
            clock[node] = max(clock.get(node, T0), end)
            if draw(st.integers(0, 7)) == 0:
                samples.reverse()  # out of time order within the report
        if draw(st.booleans()):  # as agents report: a GPU keeps its holder over the ticks
            holder = {}
            for s in samples:
                held = holder.setdefault(s["gpu_uuid"], s)
                for field in ("gpu_index", "sku", "tenant_id", "job_id"):
                    s[field] = held[field]
            if samples and draw(st.booleans()):  # but a job may end within the report
                samples[-1]["job_id"] = "job-next"
        if samples and draw(st.integers(0, 15)) == 0:  # a zero-length tick, usage or not
            empty = samples[draw(st.integers(0, len(samples) - 1))]
            empty["tick_end_us"] = empty["tick_start_us"]
            if draw(st.booleans()):
                empty.update(allocated_us=0, busy_us=0, unhealthy_us=0, energy_mj=0)
        report = make_report(samples, seq=max(seq, 0), node_id=node)
        if draw(st.integers(0, 40)) == 0:
            report["seq"] = 2**62
        defect = draw(st.sampled_from([None] * 40 + DEFECTS))
        if defect and samples:
            _inject(report, *defect)
        if samples and draw(st.integers(0, 15)) == 0:
            report["interval_end_us"] += draw(st.integers(-(10**7), 10**7))
        frame = CODEC.encode(report)
        kind = draw(st.integers(0, 24))
        if kind == 0:
            frame = frame[: draw(st.integers(0, len(frame)))]  # truncated
        elif kind == 1:
            frame = frame + b"\x00"
        elif kind == 2:
            at = draw(st.integers(10, max(10, len(frame) - 1)))
            frame = frame[:at] + bytes([draw(st.integers(0, 255))]) + frame[at + 1 :]
        frames.append(frame)
        if draw(st.integers(0, 4)) == 0:
            frames.append(frame)  # a retry right behind it
    return frames


def _run_both(
    frames: list[bytes], cuts: list[int], lateness_us: int, emit_ledger: bool = True
) -> FastPartitionProcessor:
    proc_settings = ProcessorSettings(lateness_us=lateness_us, emit_ledger=emit_ledger)
    twin = PartitionProcessor(PartitionState("usage", 0), proc_settings)
    fast = FastPartitionProcessor(PartitionState("usage", 0), proc_settings)
    messages = [SourceMessage("usage", 0, i, b"k", f, NOW_US) for i, f in enumerate(frames)]
    at = 0
    for cut in [*cuts, len(messages)]:
        batch = messages[at : max(at, cut)]
        if not batch:
            continue
        start = max(0, at - 3)  # some already-applied offsets lead each batch
        expected = twin.process(messages[start : at + len(batch)])
        got = fast.process(messages[start : at + len(batch)])
        assert got == expected
        assert fast.state == twin.state
        at += len(batch)
    return fast


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=report_frames(),
    cuts=st.lists(st.integers(0, 60), max_size=4).map(sorted),
    lateness_minutes=st.sampled_from([0, 2, 10]),
)
def test_hot_path_equals_its_twin_on_random_input(frames, cuts, lateness_minutes):
    _run_both(frames, cuts, lateness_minutes * US_PER_MINUTE)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=40), st.booleans())
def test_garbage_is_rejected_identically_and_never_crashes(blobs, with_header):
    header = load_released_versions()[-1].header
    frames = [(header + b if with_header else b) for b in blobs]
    _run_both(frames, [], 10 * US_PER_MINUTE)


def test_every_malformed_kind_gets_the_twins_reason():
    _run_both([value for _, value, _ in malformed_messages(700, seed=3)], [100, 400], 0)


def test_a_fleet_with_late_nodes_duplicates_and_gaps():
    from agent.fleet import FleetSpec, fleet_reports

    reports = list(fleet_reports(FleetSpec(nodes=12, reports_per_node=15, seed=5)))
    late = [r for r in reports if r["node_id"].endswith("0003") and r["seq"] < 6]
    frames = [CODEC.encode(r) for r in reports if r not in late]
    frames += [CODEC.encode(r) for r in late] + frames[:30:3]
    for emit_ledger in (True, False):
        fast = _run_both(frames, [17, 90, 91, 150], 2 * US_PER_MINUTE, emit_ledger=emit_ledger)
        # Valid input: the kernels, not the twin, judged every batch, and Python checked
        # the time of the late reports only (they fill holes the others left).
        assert fast.batches_to_twin == 0
        assert 0 < fast.time_checks_in_python <= len(late)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_valid_tiled_reports_are_judged_by_the_kernels(data):
    """Many valid reports that tile each node's time, in order: no batch goes to the twin,
    no overlap check to Python, and every report is metered."""
    frames, reports = [], 0
    for node in ("sc1-node-1", "sc1-node-2"):
        at = T0
        for seq in range(data.draw(st.integers(1, 12))):
            samples, at = data.draw(tiled_samples(node, at))
            frames.append(CODEC.encode(make_report(samples, seq=seq, node_id=node)))
            reports += 1
    cuts = data.draw(st.lists(st.integers(0, len(frames)), max_size=3).map(sorted))
    fast = _run_both(frames, cuts, 10 * US_PER_MINUTE)
    assert fast.batches_to_twin == 0 and fast.time_checks_in_python == 0
    assert fast.state.counters["accepted_reports"] == reports


def test_a_report_of_another_released_version_goes_to_the_twin(monkeypatch):
    """A second released version with the same fields: the kernels know only v1's
    fingerprint, so such a batch must be processed by the twin, with the same result."""
    import schemas.codec as codec_module
    from schemas.codec import _schema_version

    v1 = load_released_versions()[0]
    v2_json = copy.deepcopy(v1.schema_json)
    v2_json["doc"] = "v2 for the test"
    v2_json["fields"].append({"name": "agent_version", "type": "string", "default": ""})
    versions = (v1, _schema_version(2, v2_json))
    monkeypatch.setattr(codec_module, "load_released_versions", lambda: versions)
    v2_codec = codec_module.ReportCodec(writer_version=2)
    v1_codec = codec_module.ReportCodec(writer_version=1)
    report = make_report([make_sample(T0)])
    frames = [
        v1_codec.encode(report),
        v2_codec.encode({**make_report([make_sample(T0 + 10**7)], seq=1), "agent_version": "2.0"}),
    ]
    messages = [SourceMessage("usage", 0, i, b"k", f, NOW_US) for i, f in enumerate(frames)]
    twin = PartitionProcessor(PartitionState("usage", 0), ProcessorSettings(), v1_codec)
    fast = FastPartitionProcessor(PartitionState("usage", 0), ProcessorSettings(), v1_codec)
    expected, got = twin.process(messages), fast.process(messages)
    assert got == expected and got.accepted_reports == 2
