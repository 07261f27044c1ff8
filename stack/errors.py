"""The local stack's errors."""

from __future__ import annotations

from core.errors import MeterError


class StackError(MeterError):
    """The local broker or ClickHouse server could not be started, reached or stopped."""
