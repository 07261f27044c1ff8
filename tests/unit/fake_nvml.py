# ruff: noqa: N802, N816 - the names are pynvml's
"""An in-memory stand-in for ``pynvml`` (nvidia-ml-py): the calls, return types and
error codes the NVML collector uses, with knobs for what real boards do (counter resets,
unsupported calls, MIG, XID events, lost GPUs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_DEVICE_MIG_ENABLE = 1
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
nvmlEventTypeXidCriticalError = 0x8

_TEXT = {
    3: "Not Supported",
    6: "Not Found",
    9: "Driver Not Loaded",
    10: "Timeout",
    12: "NVML Shared Library Not Found",
    15: "GPU is lost",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _TEXT.get(self.value, f"NVML error {self.value}")


@dataclass
class FakeDevice:
    uuid: str
    name: str
    energy_mj: int = 0
    util_gpu: int = 50
    memory_used: int = 10 * 2**30
    memory_total: int = 80 * 2**30
    ecc_uncorrected: int = 0
    pages_pending: int = 0
    mig: list[FakeDevice | None] | None = None  # None: MIG off; slots (None = empty)
    unsupported: set[str] = field(default_factory=set)
    lost: bool = False


class FakeNvml:
    """Looks like the ``pynvml`` module to the collector."""

    NVMLError = NVMLError

    def __init__(self, devices: list[FakeDevice], init_error: int | None = None) -> None:
        for name, value in globals().items():
            if name.startswith(("NVML_", "nvmlEventType")):
                setattr(self, name, value)
        self.devices = devices
        self.init_error = init_error
        self.events: list[tuple[FakeDevice, int]] = []
        self.registered: set[str] = set()
        self.calls: list[str] = []

    def _check(self, call: str, dev: FakeDevice) -> None:
        self.calls.append(call)
        if dev.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if call in dev.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self.devices[index]

    def nvmlDeviceGetName(self, dev: FakeDevice) -> str:
        return dev.name

    def nvmlDeviceGetUUID(self, dev: FakeDevice) -> str:
        return dev.uuid

    def nvmlDeviceGetTotalEnergyConsumption(self, dev: FakeDevice) -> int:
        self._check("nvmlDeviceGetTotalEnergyConsumption", dev)
        return dev.energy_mj

    def nvmlDeviceGetUtilizationRates(self, dev: FakeDevice) -> SimpleNamespace:
        self._check("nvmlDeviceGetUtilizationRates", dev)
        if dev.mig is None and any(d is dev for d in self._mig_children()):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=dev.util_gpu, memory=10)

    def nvmlDeviceGetMemoryInfo(self, dev: FakeDevice) -> SimpleNamespace:
        self._check("nvmlDeviceGetMemoryInfo", dev)
        return SimpleNamespace(
            total=dev.memory_total, used=dev.memory_used, free=dev.memory_total - dev.memory_used
        )

    def nvmlDeviceGetTotalEccErrors(self, dev: FakeDevice, error_type: int, counter: int) -> int:
        self._check("nvmlDeviceGetTotalEccErrors", dev)
        assert (error_type, counter) == (NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC)
        return dev.ecc_uncorrected

    def nvmlDeviceGetRetiredPagesPendingStatus(self, dev: FakeDevice) -> int:
        self._check("nvmlDeviceGetRetiredPagesPendingStatus", dev)
        return dev.pages_pending

    def nvmlDeviceGetMigMode(self, dev: FakeDevice) -> list[int]:
        self._check("nvmlDeviceGetMigMode", dev)
        mode = 0 if dev.mig is None else NVML_DEVICE_MIG_ENABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, dev: FakeDevice) -> int:
        return 7 if dev.mig is not None else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, dev: FakeDevice, index: int) -> FakeDevice:
        slots = dev.mig or []
        if index >= len(slots) or slots[index] is None:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return slots[index]  # type: ignore[return-value]

    def _mig_children(self) -> list[FakeDevice]:
        return [c for d in self.devices for c in (d.mig or []) if c is not None]

    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlDeviceRegisterEvents(self, dev: FakeDevice, types: int, event_set: str) -> None:
        self._check("nvmlDeviceRegisterEvents", dev)
        assert types == nvmlEventTypeXidCriticalError
        self.registered.add(dev.uuid)

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> SimpleNamespace:
        if not self.events:
            raise NVMLError(NVML_ERROR_TIMEOUT)
        dev, xid = self.events.pop(0)
        return SimpleNamespace(
            device=dev,
            eventType=nvmlEventTypeXidCriticalError,
            eventData=xid,
            gpuInstanceId=0xFFFFFFFF,
            computeInstanceId=0xFFFFFFFF,
        )

    def nvmlEventSetFree(self, event_set: str) -> None:
        pass
