"""The portal's world, built once for its three modules (test_portal, test_portal_browser,
test_alerts): the known history, October issued, November drafted, and ``meter portal
serve`` over it with a token per tenant and one for finance."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from stack import StackInfo
from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER
from tests.e2e.portal_harness import SHAPE, Portal, build_history, start_portal
from warehouse.client import Warehouse


@dataclass
class PortalWorld:
    portal: Portal
    finance: Warehouse  # reads as the portal does
    warehouse: Warehouse  # the pipeline's user
    folder: Path
    info: StackInfo
    database: str


@pytest.fixture(scope="session")
def portal_world(local_stack, tmp_path_factory) -> Iterator[PortalWorld]:
    info = local_stack.running()
    assert info is not None
    folder = tmp_path_factory.mktemp("portal")
    database = f"portal_{os.urandom(3).hex()}"
    warehouse = build_history(local_stack, info, database, folder / "statements")
    finance = Warehouse(
        replace(info.settings(database), user=FINANCE_USER, password=FINANCE_PASSWORD)
    )
    portal = start_portal(info, database, folder)
    try:
        for tenant in SHAPE.tenant_ids:
            portal.tokens[tenant] = portal.issue("--tenant", tenant, "--ttl", "2h")
        portal.tokens["finance"] = portal.issue("--finance", "--ttl", "2h", "--label", "ops")
        yield PortalWorld(portal, finance, warehouse, folder, info, database)
    finally:
        if portal.process.poll() is None:
            portal.stop()
        finance.close()
        warehouse.drop_database()
        warehouse.close()
