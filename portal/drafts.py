"""``meter portal drafts``: the open month's statement of every tenant, composed as
``meter statements --draft`` composes it and stored for the portal (composing one takes
seconds; a page may not). Run it every few minutes: each run adds a drawing, and the
portal shows the latest, with when it was drawn."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from billing.issue import draft_documents
from billing.issuer import Issuer
from billing.statement import canonical_bytes
from warehouse.client import Warehouse


def draw(
    warehouse: Warehouse,
    period_label: str,
    issuer: Issuer,
    clock: Callable[[], datetime],
    tenant_id: str | None = None,
) -> list[tuple[str, str, str]]:
    """(tenant, DRAFT total or "", why not) per tenant; the drafts are stored."""
    drawn_at = clock().replace(microsecond=0)
    rows, outcomes = [], []
    for tid, statement, why in draft_documents(
        warehouse, period_label, tenant_id, lambda: drawn_at, issuer=issuer
    ):
        if statement is None:
            outcomes.append((tid, "", why))
            continue
        total = statement["totals"]["total"]
        rows.append((tid, period_label, drawn_at, total, canonical_bytes(statement).decode()))
        outcomes.append((tid, total, ""))
    if rows:
        warehouse.execute(
            "INSERT INTO statement_drafts (tenant_id, period, drawn_at, total, document) VALUES",
            rows,
        )
    return outcomes
