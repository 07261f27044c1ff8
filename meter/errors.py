"""The one exception root of the project and its direct families.

Every error raised on purpose by project code derives from :class:`MeterError`, so a caller
can catch "anything the metering pipeline refused" without catching programming errors.
"""

from __future__ import annotations


class MeterError(Exception):
    """Root of every error the project raises on purpose."""


class ConfigError(MeterError):
    """Configuration was rejected at the edge (CLI flags, env vars, files)."""


class StackError(MeterError):
    """The local broker or ClickHouse server could not be started, reached or stopped."""


class MigrationError(MeterError):
    """A warehouse migration is missing, changed after being applied, or failed."""


class SinkError(MeterError):
    """A write to the warehouse failed after its retries."""


class CorruptFetchError(MeterError):
    """Fetched record batches whose lengths or CRC do not add up: never guessed at."""


class RejectedReport(MeterError):  # noqa: N818 - a rejection is data, not a failure
    """A usage report that will not be metered, with a machine-readable reason.

    ``reason`` is a short stable code (see :mod:`meter.reasons`); ``detail`` is for people.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ContractError(MeterError):
    """A contracts file was refused; the message names the contract and field at fault."""


class BillingError(MeterError):
    """A statement or reconciliation could not be produced as asked (and nothing was issued)."""


class CorrectionError(ContractError):
    """A corrections file or a correction was refused (nothing was recorded); the message
    names the correction and field at fault."""
