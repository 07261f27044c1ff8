"""The import graph, read from the source: the packages of the data's path (agent, streams,
warehouse, billing) never import the command, the demo harness, the benchmarks or the
fleet simulator, and the vocabulary modules everyone imports import none of those
packages. A change that breaks a layer fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
PIPELINE = ("agent", "streams", "warehouse", "billing")
# The command and its harness (meter/), the benchmarks and their generators (bench/), the
# fleet simulator.
TOP = ("meter", "bench", "agent.fleet")
# The vocabulary (units, windows, names and identity, reasons, the error root, logs): a
# package at the bottom of the graph.
VOCABULARY = "core"
PROJECT = (*PIPELINE, "bench", "core", "meter", "schemas", "stack")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _sources(packages: tuple[str, ...]) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _within(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(f"{m}.") for m in modules)


def test_the_pipeline_imports_no_command_harness_benchmark_or_simulator():
    sources = _sources(PIPELINE)
    assert len(sources) > 60
    wrong = {
        f"{_module(path)} imports {name}"
        for path in sources
        if not _within(_module(path), TOP)
        for name in _imports(path)
        if _within(name, TOP)
    }
    assert not wrong, sorted(wrong)


def test_the_vocabulary_imports_only_the_vocabulary():
    sources = _sources((VOCABULARY,))
    assert len(sources) >= 6
    wrong = {
        f"{_module(path)} imports {name}"
        for path in sources
        for name in _imports(path)
        if _within(name, PROJECT) and not _within(name, (VOCABULARY,))
    }
    assert not wrong, sorted(wrong)


def test_every_error_is_in_its_package_errors_module_under_the_one_root():
    """Each package's errors are in its ``errors`` module, all derived from
    ``core.errors.MeterError`` (found from the source: a class is an error if a base is)."""
    classes: dict[str, tuple[str, list[str]]] = {}  # name -> (module, base names)
    for path in _sources(PROJECT):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = [
                    b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
                ]
                classes[node.name] = (_module(path), bases)
    errors = {"MeterError"}
    while grown := {n for n, (_, bases) in classes.items() if set(bases) & errors} - errors:
        errors |= grown
    assert len(errors) > 12
    misplaced = sorted(
        f"{classes[name][0]}.{name}" for name in errors if not classes[name][0].endswith(".errors")
    )
    assert not misplaced, misplaced
    assert classes["MeterError"][0] == "core.errors"
