"""The import graph, read from the source: the packages of the data's path (agent, streams,
warehouse, billing) never import the command, the demo harness, the benchmarks or the
fleet simulator, and the vocabulary modules everyone imports import none of those
packages. A change that breaks a layer fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
PIPELINE = ("agent", "streams", "warehouse", "billing")
# The command and its harness, the benchmarks and load generator, the simulator.
TOP = (
    "meter.cli", "meter.boundary", "meter.demo", "meter.runner", "meter.status",
    "meter.history", "meter.loadgen", "meter.bench_agents", "meter.bench_e2e",
    "meter.bench_finance", "meter.bench_hotpath", "meter.bench_soak", "agent.fleet",
    "agent.bench",
)  # fmt: skip
# The vocabulary: units, windows, names and identity, reasons, errors, logs.
VOCABULARY = ("meter.errors", "meter.units", "meter.windows", "meter.reasons",
              "meter.identity", "meter.logs")  # fmt: skip


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
    wrong = {
        f"{module} imports {name}"
        for module in VOCABULARY
        for name in _imports(ROOT / (module.replace(".", "/") + ".py"))
        if _within(name, (*PIPELINE, "meter", "schemas")) and not _within(name, VOCABULARY)
        and name != "meter"
    }  # fmt: skip
    assert not wrong, sorted(wrong)
