"""The warehouse's errors: migrations and writes."""

from __future__ import annotations

from core.errors import MeterError


class MigrationError(MeterError):
    """A warehouse migration is missing, changed after being applied, or failed."""


class SinkError(MeterError):
    """A write to the warehouse failed after its retries."""
