"""The portal's errors: a refused token, and the portal's own refusals."""

from __future__ import annotations

from core.errors import MeterError


class PortalError(MeterError):
    """The portal or one of its commands refused what it was asked (nothing was changed)."""


class TokenRefused(PortalError):  # noqa: N818 - a refusal, answered with 401
    """The request's token is missing, unknown, expired or revoked."""


class AlertError(PortalError):
    """An alert hook was refused (its URL, secret or thresholds), or a delivery failed."""
