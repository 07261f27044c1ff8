"""The wire format's errors: bytes that are not a readable report."""

from __future__ import annotations

from core import reasons
from core.errors import RejectedReport


class DecodeError(RejectedReport):
    """Bytes that are not a readable usage report; ``reason`` says why."""


class UnknownSchemaError(DecodeError):
    """The frame names a writer schema fingerprint that no released version has."""

    def __init__(self, fingerprint: bytes) -> None:
        super().__init__(reasons.UNKNOWN_SCHEMA, f"fingerprint {fingerprint.hex()}")
        self.fingerprint = fingerprint
