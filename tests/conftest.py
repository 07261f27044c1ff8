"""Shared fixtures. The real broker and ClickHouse are started once per session by the
project's own stack code, only when a test asks for them; each test gets its own topic,
consumer group and ClickHouse database. The stack folder (logs, data) is kept under
pytest's basetemp so a failure can be examined afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from stack import LocalStack, StackInfo
from streams.host.settings import WorkerSettings
from streams.host.topics import ensure_topics
from warehouse.client import Warehouse
from warehouse.migrate import migrate


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp("stack"))
    local.up()  # raises StackError naming the install command if a binary is missing
    try:
        yield local
    finally:
        local.down()


@pytest.fixture
def stack(local_stack: LocalStack) -> StackInfo:
    info = local_stack.running()
    assert info is not None, f"the session stack died; see {local_stack.folder}"
    return info


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    stem = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    return f"{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def warehouse(stack: StackInfo, unique_name: str) -> Iterator[Warehouse]:
    wh = Warehouse(stack.settings(f"t_{unique_name}"))
    migrate(wh)
    try:
        yield wh
    finally:
        wh.close()


@pytest.fixture
def worker_settings(
    stack: StackInfo, warehouse: Warehouse, unique_name: str, tmp_path
) -> WorkerSettings:
    """Settings for a worker on a fresh topic (4 partitions) and group, topics created."""
    name = unique_name.replace("_", "-")
    settings = WorkerSettings(
        bootstrap=stack.bootstrap,
        topic=f"usage-{name}",
        app_id=f"meter-{name}",
        partitions=4,
        clickhouse=warehouse.settings,
        datadir=tmp_path / "faust",
    )
    ensure_topics(stack.bootstrap, {settings.topic: settings.partitions, settings.dlq_topic: 1})
    return settings
