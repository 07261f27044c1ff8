"""The NVML collector against a fake NVML with the calls and types of nvidia-ml-py."""

from __future__ import annotations

import inspect

import pynvml
import pytest

from agent.collectors.nvml import NvmlCollector, sku_of_board
from agent.errors import CollectorUnavailable
from core.errors import ConfigError
from tests.unit.fake_nvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    FakeDevice,
    FakeNvml,
)

T0 = 1_800_000_000_000_000
TICK = 10_000_000


def h100(n: int, **kw: object) -> FakeDevice:
    return FakeDevice(uuid=f"GPU-{n:04d}", name="NVIDIA H100 80GB HBM3", **kw)  # type: ignore[arg-type]


def test_the_fake_uses_only_names_the_real_pynvml_has() -> None:
    fake = FakeNvml([])
    names = [n for n in dir(fake) if n.startswith(("nvml", "NVML"))]
    missing = [n for n in names if not hasattr(pynvml, n)]
    assert names and missing == []
    for name in names:
        real = getattr(pynvml, name)
        if callable(real) and not isinstance(real, type):
            fake_params = len(inspect.signature(getattr(fake, name)).parameters)
            real_params = [
                p
                for p in inspect.signature(real).parameters.values()
                if p.default is inspect.Parameter.empty
            ]
            assert fake_params >= len(real_params), name


def test_reads_energy_as_a_counter_delta_busy_and_memory() -> None:
    dev = h100(0, energy_mj=1_000_000, util_gpu=37, memory_used=123)
    collector = NvmlCollector(FakeNvml([dev]))
    [unit] = collector.units()
    assert (unit.uuid, unit.index, unit.sku) == ("GPU-0000", 0, "H100")
    dev.energy_mj += 7_000_123
    [reading] = collector.read_tick(T0, T0 + TICK).readings
    assert reading.energy_mj == 7_000_123
    assert reading.busy_us == TICK * 37 // 100
    assert reading.memory_peak_bytes == 123
    assert reading.unhealthy is False


def test_energy_counter_reset_after_driver_reload_counts_since_the_reload() -> None:
    dev = h100(0, energy_mj=50_000_000)
    collector = NvmlCollector(FakeNvml([dev]))
    dev.energy_mj = 2_500  # driver reloaded: the counter restarted near zero
    result = collector.read_tick(T0, T0 + TICK)
    assert result.readings[0].energy_mj == 2_500
    assert any("reset" in i.detail for i in result.issues)
    dev.energy_mj = 4_000
    assert collector.read_tick(T0 + TICK, T0 + 2 * TICK).readings[0].energy_mj == 1_500


def test_unsupported_calls_are_issues_not_crashes() -> None:
    dev = h100(
        0,
        unsupported={
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetTotalEccErrors",
            "nvmlDeviceGetRetiredPagesPendingStatus",
            "nvmlDeviceRegisterEvents",
            "nvmlDeviceGetUtilizationRates",
            "nvmlDeviceGetMigMode",
        },
    )
    collector = NvmlCollector(FakeNvml([dev]))
    result = collector.read_tick(T0, T0 + TICK)
    [reading] = result.readings
    assert (reading.energy_mj, reading.busy_us, reading.unhealthy) == (0, 0, False)
    calls = {i.call for i in result.issues}
    assert {
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceRegisterEvents",
    } <= calls
    assert all("Not Supported" in i.detail for i in result.issues)


@pytest.mark.parametrize("code", [NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED])
def test_nvml_missing_is_a_clear_error(code: int) -> None:
    with pytest.raises(CollectorUnavailable, match="NVIDIA driver"):
        NvmlCollector(FakeNvml([], init_error=code))


def test_unknown_board_asks_for_a_mapping_and_overrides_work() -> None:
    with pytest.raises(ConfigError, match="sku_names"):
        NvmlCollector(FakeNvml([FakeDevice("GPU-1", "Mystery Accelerator 9000")]))
    collector = NvmlCollector(
        FakeNvml([FakeDevice("GPU-1", "Mystery Accelerator 9000")]),
        sku_names={"Mystery Accelerator 9000": "B200"},
    )
    assert collector.units()[0].sku == "B200"
    assert sku_of_board("NVIDIA A100-SXM4-80GB", {}) == "A100"
    assert sku_of_board("NVIDIA GB200", {}) == "GB200"
    assert sku_of_board("NVIDIA B200", {}) == "B200"


def test_mig_instances_are_their_own_units_and_split_the_parent_energy_exactly() -> None:
    small = FakeDevice("MIG-aaaa", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", memory_total=10 * 2**30)
    large = FakeDevice("MIG-bbbb", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", memory_total=40 * 2**30)
    parent = h100(0, energy_mj=0, mig=[small, None, large])
    collector = NvmlCollector(FakeNvml([parent, h100(1)]))
    units = collector.units()
    assert [(u.uuid, u.sku, u.index, u.parent_uuid) for u in units] == [
        ("MIG-aaaa", "H100-MIG-1g.10gb", 0, "GPU-0000"),
        ("MIG-bbbb", "H100-MIG-3g.40gb", 0, "GPU-0000"),
        ("GPU-0001", "H100", 1, ""),
    ]
    parent.energy_mj = 1_000_001
    result = collector.read_tick(T0, T0 + TICK)
    by_uuid = {r.unit.uuid: r for r in result.readings}
    assert by_uuid["MIG-aaaa"].energy_mj + by_uuid["MIG-bbbb"].energy_mj == 1_000_001
    assert by_uuid["MIG-aaaa"].energy_mj == 1_000_001 * 10 // 50
    assert by_uuid["MIG-aaaa"].busy_us == 0
    assert any(i.unit == "MIG-aaaa" and "MIG" in i.detail for i in result.issues)


def test_health_signals_mark_the_tick_unhealthy() -> None:
    devs = [h100(i) for i in range(5)]
    nvml = FakeNvml(devs)
    collector = NvmlCollector(nvml)
    assert nvml.registered == {d.uuid for d in devs}
    nvml.events += [(devs[0], 79), (devs[1], 13)]  # fell off the bus; an application fault
    devs[2].ecc_uncorrected += 1
    devs[3].pages_pending = 1
    devs[4].lost = True
    result = collector.read_tick(T0, T0 + TICK)
    assert [r.unhealthy for r in result.readings] == [True, False, True, True, True]
    assert not collector.read_tick(T0 + TICK, T0 + 2 * TICK).readings[2].unhealthy
