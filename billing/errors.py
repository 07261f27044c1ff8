"""Billing's errors: contracts, corrections, statements and reconciliation."""

from __future__ import annotations

from core.errors import MeterError


class ContractError(MeterError):
    """A contracts file was refused; the message names the contract and field at fault."""


class BillingError(MeterError):
    """A statement or reconciliation could not be produced as asked (and nothing was issued)."""


class CorrectionError(ContractError):
    """A corrections file or a correction was refused (nothing was recorded); the message
    names the correction and field at fault."""
