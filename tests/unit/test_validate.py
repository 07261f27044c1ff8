import pytest

from core import reasons
from core.errors import RejectedReport
from core.identity import ReportLimits
from core.units import US_PER_SECOND
from streams.processing.validate import validate_report
from tests.factories import NOW_US, TICK_US, make_report, make_sample

LIMITS = ReportLimits()


def reason_of(report) -> str:
    with pytest.raises(RejectedReport) as info:
        validate_report(report, LIMITS, NOW_US)
    return info.value.reason


def test_a_plain_report_is_valid():
    validate_report(make_report(), LIMITS, NOW_US)


def test_an_empty_report_is_valid():
    validate_report(make_report([]), LIMITS, NOW_US)


def test_unallocated_is_an_accepted_tenant():
    validate_report(make_report([make_sample(tenant_id="unallocated")]), LIMITS, NOW_US)


@pytest.mark.parametrize(
    ("sample_overrides", "reason"),
    [
        ({"allocated_us": -1}, reasons.NEGATIVE_COUNTER),
        ({"busy_us": -5}, reasons.NEGATIVE_COUNTER),
        ({"energy_mj": -1}, reasons.NEGATIVE_COUNTER),
        ({"memory_peak_bytes": -1}, reasons.NEGATIVE_COUNTER),
        ({"allocated_us": TICK_US + 1}, reasons.COUNTER_EXCEEDS_TICK),
        ({"busy_us": TICK_US + 1}, reasons.COUNTER_EXCEEDS_TICK),
        ({"unhealthy_us": TICK_US, "allocated_us": TICK_US - 1}, reasons.COUNTER_EXCEEDS_TICK),
        ({"energy_mj": 2**63 - 1}, reasons.COUNTER_OUT_OF_RANGE),
        ({"memory_peak_bytes": 2**62}, reasons.COUNTER_OUT_OF_RANGE),
        ({"sku": "Z9000"}, reasons.UNKNOWN_SKU),
        ({"tenant_id": ""}, reasons.INVALID_TENANT),
        ({"tenant_id": "Robert'); DROP TABLE"}, reasons.INVALID_TENANT),
        ({"gpu_uuid": ""}, reasons.INVALID_IDENTITY),
        ({"gpu_index": -1}, reasons.INVALID_IDENTITY),
    ],
)
def test_bad_samples_are_rejected_with_their_reason(sample_overrides, reason):
    assert reason_of(make_report([make_sample(**sample_overrides)])) == reason


def test_tick_end_before_start():
    sample = make_sample()
    sample["tick_end_us"] = sample["tick_start_us"] - 1
    assert reason_of(make_report([sample])) == reasons.END_BEFORE_START


def _empty_tick(**counters: int) -> dict:
    sample = make_sample(
        **{**dict.fromkeys(("allocated_us", "busy_us", "energy_mj"), 0), **counters}
    )
    sample["tick_end_us"] = sample["tick_start_us"]
    return sample


def test_a_zero_length_tick_without_usage_is_valid_even_beside_a_tick_at_its_start():
    validate_report(make_report([make_sample(), _empty_tick()]), ReportLimits(), NOW_US)


@pytest.mark.parametrize("counter", ["allocated_us", "busy_us", "unhealthy_us", "energy_mj"])
def test_a_zero_length_tick_with_usage_has_its_own_reason(counter):
    report = make_report([make_sample(), _empty_tick(**{counter: 1})])
    assert reason_of(report) == reasons.EMPTY_TICK_WITH_USAGE


def test_report_end_before_start():
    report = make_report()
    report["interval_end_us"] = report["interval_start_us"] - 1
    assert reason_of(report) == reasons.END_BEFORE_START


def test_tick_outside_its_report_interval():
    report = make_report()
    report["interval_end_us"] -= 1
    assert reason_of(report) == reasons.TICK_OUTSIDE_INTERVAL


def test_far_future_report():
    start = NOW_US + 3600 * US_PER_SECOND
    assert reason_of(make_report([make_sample(start)])) == reasons.FUTURE_TIMESTAMP


def test_slightly_future_report_is_clock_skew_not_an_error():
    validate_report(make_report([make_sample(NOW_US)]), LIMITS, NOW_US)


def test_same_gpu_tick_twice_in_one_report():
    assert reason_of(make_report([make_sample(), make_sample()])) == reasons.DUPLICATE_SAMPLE


def test_negative_seq_and_bad_node_id():
    assert reason_of(make_report(seq=-1)) == reasons.INVALID_IDENTITY
    assert reason_of(make_report(node_id="")) == reasons.INVALID_IDENTITY


def test_too_many_samples():
    limits = ReportLimits(max_samples=2)
    samples = [make_sample(gpu_index=i, gpu_uuid=f"GPU-{i}") for i in range(3)]
    with pytest.raises(RejectedReport) as info:
        validate_report(make_report(samples), limits, NOW_US)
    assert info.value.reason == reasons.TOO_MANY_SAMPLES


def test_a_trailing_newline_is_not_a_valid_name():
    assert reason_of(make_report(node_id="sc1-node-1\n")) == reasons.INVALID_IDENTITY
    assert reason_of(make_report([make_sample(tenant_id="aurora-labs\n")])) == (
        reasons.INVALID_TENANT
    )
