"""Billing: contracts, rating, statements and reconciliation over the metered usage."""
