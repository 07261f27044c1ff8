"""The agent's errors: its collector, allocation source and publishing."""

from __future__ import annotations

from core.errors import ConfigError, MeterError


class PublishError(MeterError):
    """A report was not acknowledged by the broker."""


class CollectorUnavailable(MeterError):  # noqa: N818 - reads as a state, like the others
    """The collector cannot run on this node at all (no NVML library, no driver, no GPU)."""


class AllocationError(ConfigError):
    """An allocation file was refused; the message says where and why."""
