"""The one exception root of the project, and the errors every layer shares.

Every error raised on purpose by project code derives from :class:`MeterError`, so a caller
can catch "anything the metering pipeline refused" without catching programming errors.
Each package keeps its own errors in its ``errors`` module (``streams.errors``,
``warehouse.errors``, ``billing.errors``, ``stack.errors``), all under this root; here are
only the two every layer raises: configuration refused at the edge, and a report refused
with a reason (the wire format's decoder raises it as much as the pipeline does).
"""

from __future__ import annotations


class MeterError(Exception):
    """Root of every error the project raises on purpose."""


class ConfigError(MeterError):
    """Configuration was rejected at the edge (CLI flags, env vars, files)."""


class RejectedReport(MeterError):  # noqa: N818 - a rejection is data, not a failure
    """A usage report that will not be metered, with a machine-readable reason.

    ``reason`` is a short stable code (see :mod:`core.reasons`); ``detail`` is for people.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
