"""The suite's own layout: every test that starts a server says so with its mark, so
``pytest -m "not integration and not e2e"`` runs without the broker or ClickHouse."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parents[1]


def _mark(path: Path) -> str | None:
    for node in ast.parse(path.read_text(), str(path)).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and isinstance(node.value, ast.Attribute)
        ):
            return node.value.attr
    return None


def test_every_integration_and_e2e_module_carries_its_mark():
    modules = {kind: sorted((TESTS / kind).glob("test_*.py")) for kind in ("integration", "e2e")}
    assert all(len(found) >= 5 for found in modules.values())
    unmarked = [
        str(path.relative_to(TESTS))
        for kind, paths in modules.items()
        for path in paths
        if _mark(path) != kind
    ]
    assert not unmarked, unmarked
