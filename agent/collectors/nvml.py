"""The NVML collector: real GPUs through ``nvidia-ml-py`` (module ``pynvml``).

Per physical GPU, at every tick end:

- energy: ``nvmlDeviceGetTotalEnergyConsumption`` is a counter in mJ since the driver
  loaded; a tick gets the delta. A counter lower than the last reading means the driver
  was reloaded: the tick gets the new reading (the energy since the reload) and the reset
  is recorded as an issue. The energy between the last reading and the reload is lost and
  said so.
- busy: ``nvmlDeviceGetUtilizationRates().gpu`` (percent over NVML's last sample period,
  1/6 s to 1 s) × tick length. A sampled figure, not a counter.
- memory: ``nvmlDeviceGetMemoryInfo().used`` at the tick end (NVML keeps no peak).
- health: the tick is unhealthy when, during it, a critical XID arrived (hardware faults,
  not application errors: see ``CRITICAL_XIDS``), the volatile uncorrected ECC count rose,
  pages are pending retirement, or the GPU is lost.

MIG: where MIG mode is on, each MIG instance is its own billable unit (``MIG-…`` uuid, SKU
``<parent>-MIG-<profile>``). NVML has no per-instance energy or utilisation; the parent's
energy is split over its instances by memory size (cumulative-floor rule, nothing lost),
busy time is not available (0, recorded once as an unsupported call).

A call a board does not support is recorded as an issue (logged once by the agent, counted
in ``meter_agent_nvml_errors_total``) and the reading degrades to 0; it never stops the
agent. NVML itself missing stops the agent at start with :class:`CollectorUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from agent.collectors import CollectorIssue, GpuUnit, TickReading, TickReadings
from agent.errors import CollectorUnavailable
from core.errors import ConfigError

# Hardware-side XIDs (NVIDIA's XID catalogue): double-bit ECC, row-remap failures, NVLink,
# fallen off the bus, contained/uncontained memory errors, GSP errors.
# Application faults (13, 31, 43, 45, ...) are the tenant's own and not counted.
CRITICAL_XIDS = frozenset({48, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140})
BOARD_SKUS = ("GB200", "B200", "H200", "H100", "A100", "L40S", "MI300X")
_MIG_PROFILE = re.compile(r"\b(\d+g\.\d+gb)\b", re.IGNORECASE)


def sku_of_board(name: str, overrides: Mapping[str, str]) -> str:
    """The SKU a board name bills as: an override, else the first known token in it."""
    if name in overrides:
        return overrides[name]
    for sku in BOARD_SKUS:
        if re.search(rf"(?<![A-Z0-9]){sku}(?![A-Z0-9])", name.upper()):
            return sku
    raise ConfigError(
        f"GPU board {name!r} has no known SKU; map it under [nvml] sku_names in the agent config"
    )


def load_pynvml() -> ModuleType:
    try:
        import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise CollectorUnavailable(
            "the NVML collector needs nvidia-ml-py: pip install 'gpu-meter[nvml]'"
        ) from exc
    return pynvml


@dataclass
class _Gpu:
    handle: Any
    unit: GpuUnit
    last_energy_mj: int | None = None
    last_ecc: int | None = None
    instances: list[tuple[Any, GpuUnit, int]] = field(default_factory=list)  # handle, unit, mem


class NvmlCollector:
    def __init__(
        self, nvml: ModuleType | None = None, sku_names: Mapping[str, str] | None = None
    ) -> None:
        self.nvml = nvml if nvml is not None else load_pynvml()
        self._sku_names = dict(sku_names or {})
        self._events: Any = None
        self._startup_issues: list[CollectorIssue] = []
        self._lost: set[str] = set()  # uuids whose calls answered "GPU is lost" this tick
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as exc:
            raise CollectorUnavailable(
                f"NVML did not start ({exc}); is the NVIDIA driver loaded on this node?"
            ) from exc
        try:
            self._gpus = [self._discover(i) for i in range(self.nvml.nvmlDeviceGetCount())]
        except self.nvml.NVMLError as exc:
            self.close()
            raise CollectorUnavailable(f"NVML could not list the GPUs: {exc}") from exc
        self._watch_xids()

    # -- discovery --------------------------------------------------------------------

    def _discover(self, index: int) -> _Gpu:
        nv = self.nvml
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        name = nv.nvmlDeviceGetName(handle)
        sku = sku_of_board(name, self._sku_names)
        gpu = _Gpu(handle, GpuUnit(nv.nvmlDeviceGetUUID(handle), index, sku))
        gpu.last_energy_mj = self._call("nvmlDeviceGetTotalEnergyConsumption", gpu.unit, handle)
        gpu.last_ecc = self._ecc(gpu)
        if self._mig_enabled(gpu):
            for slot in range(nv.nvmlDeviceGetMaxMigDeviceCount(handle)):
                try:
                    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                except nv.NVMLError as exc:
                    if exc.value == nv.NVML_ERROR_NOT_FOUND:
                        continue  # an empty slot
                    raise
                match = _MIG_PROFILE.search(nv.nvmlDeviceGetName(mig))
                profile = match.group(1).lower() if match else f"slot{slot}"
                unit = GpuUnit(
                    nv.nvmlDeviceGetUUID(mig), index, f"{sku}-MIG-{profile}", gpu.unit.uuid
                )
                gpu.instances.append((mig, unit, int(nv.nvmlDeviceGetMemoryInfo(mig).total)))
                self._startup_issues.append(
                    CollectorIssue("nvmlDeviceGetUtilizationRates", unit.uuid, "MIG: no busy time")
                )
        return gpu

    def _mig_enabled(self, gpu: _Gpu) -> bool:
        mode = self._call("nvmlDeviceGetMigMode", gpu.unit, gpu.handle, record=False)
        return mode is not None and mode[0] == self.nvml.NVML_DEVICE_MIG_ENABLE

    def _watch_xids(self) -> None:
        nv = self.nvml
        try:
            self._events = nv.nvmlEventSetCreate()
        except nv.NVMLError as exc:
            self._startup_issues.append(CollectorIssue("nvmlEventSetCreate", "", str(exc)))
            return
        for gpu in self._gpus:
            self._call(
                "nvmlDeviceRegisterEvents",
                gpu.unit,
                gpu.handle,
                nv.nvmlEventTypeXidCriticalError,
                self._events,
                issues=self._startup_issues,
            )

    # -- reading ----------------------------------------------------------------------

    def units(self) -> list[GpuUnit]:
        out = []
        for gpu in self._gpus:
            out.extend([u for _, u, _ in gpu.instances] or [gpu.unit])
        return out

    def read_tick(self, tick_start_us: int, tick_end_us: int) -> TickReadings:
        tick_us = tick_end_us - tick_start_us
        issues, self._startup_issues = self._startup_issues, []
        self._lost.clear()
        faulted = self._critical_xids(issues)
        readings = []
        for gpu in self._gpus:
            energy = self._energy_delta(gpu, issues)
            unhealthy = gpu.unit.uuid in faulted or self._health_fault(gpu, issues)
            if not gpu.instances:
                util = self._call(
                    "nvmlDeviceGetUtilizationRates", gpu.unit, gpu.handle, issues=issues
                )
                memory = self._call("nvmlDeviceGetMemoryInfo", gpu.unit, gpu.handle, issues=issues)
                busy_us = tick_us * min(100, int(util.gpu)) // 100 if util is not None else 0
                readings.append(
                    TickReading(
                        gpu.unit,
                        busy_us,
                        unhealthy,
                        energy,
                        int(memory.used) if memory is not None else 0,
                    )
                )
                continue
            total_mem = sum(mem for _, _, mem in gpu.instances) or 1
            cumulative = 0
            previous_share = 0
            for handle, unit, mem in gpu.instances:
                cumulative += mem
                share = energy * cumulative // total_mem
                memory = self._call("nvmlDeviceGetMemoryInfo", unit, handle, issues=issues)
                readings.append(
                    TickReading(
                        unit,
                        0,
                        unhealthy,
                        share - previous_share,
                        int(memory.used) if memory is not None else 0,
                    )
                )
                previous_share = share
        return TickReadings(readings, issues)

    def _energy_delta(self, gpu: _Gpu, issues: list[CollectorIssue]) -> int:
        now = self._call("nvmlDeviceGetTotalEnergyConsumption", gpu.unit, gpu.handle, issues=issues)
        if now is None:
            return 0
        now = int(now)
        last, gpu.last_energy_mj = gpu.last_energy_mj, now
        if last is None:
            return 0  # first reading after the counter became readable: a baseline
        if now < last:
            issues.append(
                CollectorIssue(
                    "nvmlDeviceGetTotalEnergyConsumption",
                    gpu.unit.uuid,
                    f"energy counter reset ({last} -> {now} mJ): driver reloaded; "
                    "energy between the last reading and the reload is not metered",
                )
            )
            return now
        return now - last

    def _ecc(self, gpu: _Gpu, issues: list[CollectorIssue] | None = None) -> int | None:
        nv = self.nvml
        count = self._call(
            "nvmlDeviceGetTotalEccErrors",
            gpu.unit,
            gpu.handle,
            nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nv.NVML_VOLATILE_ECC,
            issues=issues,
        )
        return None if count is None else int(count)

    def _health_fault(self, gpu: _Gpu, issues: list[CollectorIssue]) -> bool:
        fault = False
        ecc = self._ecc(gpu, issues)
        if ecc is not None:
            fault = gpu.last_ecc is not None and ecc > gpu.last_ecc
            gpu.last_ecc = ecc
        pending = self._call(
            "nvmlDeviceGetRetiredPagesPendingStatus", gpu.unit, gpu.handle, issues=issues
        )
        return fault or pending == 1 or gpu.unit.uuid in self._lost

    def _critical_xids(self, issues: list[CollectorIssue]) -> set[str]:
        """uuids of GPUs with a critical XID since the last tick (drains the event set)."""
        nv = self.nvml
        faulted: set[str] = set()
        if self._events is None:
            return faulted
        while True:
            try:
                event = nv.nvmlEventSetWait_v2(self._events, 0)
            except nv.NVMLError as exc:
                if exc.value != nv.NVML_ERROR_TIMEOUT:
                    issues.append(CollectorIssue("nvmlEventSetWait_v2", "", str(exc)))
                return faulted
            if int(event.eventData) in CRITICAL_XIDS:
                try:
                    faulted.add(nv.nvmlDeviceGetUUID(event.device))
                except nv.NVMLError as exc:
                    issues.append(CollectorIssue("nvmlDeviceGetUUID", "", str(exc)))

    def _call(
        self,
        name: str,
        unit: GpuUnit,
        *args: Any,
        issues: list[CollectorIssue] | None = None,
        record: bool = True,
    ) -> Any:
        """Call NVML; an error becomes an issue (or is swallowed if not ``record``)."""
        try:
            return getattr(self.nvml, name)(*args)
        except self.nvml.NVMLError as exc:
            if exc.value == self.nvml.NVML_ERROR_GPU_IS_LOST:
                self._lost.add(unit.uuid)
            if record:
                target = issues if issues is not None else self._startup_issues
                target.append(CollectorIssue(name, unit.uuid, str(exc)))
            return None

    def close(self) -> None:
        nv = self.nvml
        try:
            if self._events is not None:
                nv.nvmlEventSetFree(self._events)
                self._events = None
            nv.nvmlShutdown()
        except nv.NVMLError:
            pass  # shutting down: nothing left to protect
