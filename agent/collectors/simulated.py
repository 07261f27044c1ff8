"""The simulated fleet's GPUs as a collector: the same power and memory model as
``agent.fleet``, deterministic per (seed, node, GPU, tick), no hardware needed."""

from __future__ import annotations

import random
import uuid

from agent.collectors import CollectorIssue, GpuUnit, TickReading, TickReadings
from core.errors import ConfigError
from core.identity import SKU_MEMORY_BYTES, SKU_POWER_MW
from core.units import US_PER_SECOND


class SimulatedCollector:
    def __init__(
        self,
        node_id: str,
        gpus: int = 8,
        sku: str = "H100",
        seed: int = 7,
        unhealthy_rate: float = 0.01,
    ) -> None:
        if sku not in SKU_POWER_MW:
            raise ConfigError(f"simulated sku must be one of {sorted(SKU_POWER_MW)}, not {sku!r}")
        if gpus < 1:
            raise ConfigError("simulated gpus must be at least 1")
        self.node_id = node_id
        self.seed = seed
        self.sku = sku
        self.unhealthy_rate = unhealthy_rate
        rng = random.Random(f"{seed}:{node_id}:uuids")
        self._units = [
            GpuUnit("GPU-" + str(uuid.UUID(int=rng.getrandbits(128), version=4)), i, sku)
            for i in range(gpus)
        ]

    def units(self) -> list[GpuUnit]:
        return list(self._units)

    def read_tick(self, tick_start_us: int, tick_end_us: int) -> TickReadings:
        tick_us = tick_end_us - tick_start_us
        low_mw, high_mw = SKU_POWER_MW[self.sku]
        readings = []
        for unit in self._units:
            rng = random.Random(f"{self.seed}:{unit.uuid}:{tick_start_us}")
            power_mw = rng.randint(low_mw, high_mw)
            readings.append(
                TickReading(
                    unit=unit,
                    busy_us=rng.randint(0, tick_us),
                    unhealthy=rng.random() < self.unhealthy_rate,
                    energy_mj=power_mw * tick_us // US_PER_SECOND,
                    memory_peak_bytes=rng.randint(0, SKU_MEMORY_BYTES[self.sku]),
                )
            )
        return TickReadings(readings, list[CollectorIssue]())

    def close(self) -> None:
        pass
