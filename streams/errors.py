"""The stream processor's errors (a refused report is data, ``core.errors.RejectedReport``)."""

from __future__ import annotations

from core.errors import MeterError


class CorruptFetchError(MeterError):
    """Fetched record batches whose lengths or CRC do not add up: never guessed at."""


class NotConsumedError(MeterError):
    """The group did not reach the expected offsets in time."""


class StateMissingError(MeterError):
    """A partition's progress is stored but no snapshot of its state: never started afresh."""
