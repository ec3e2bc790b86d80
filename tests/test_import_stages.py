"""Data flows one way (DESIGN.md): the pure stages never import the emulation, the run-time workload code or Mininet.

The test walks the module-level imports of every module of the package (the
imports that run when a module is loaded; ``if TYPE_CHECKING`` blocks excluded)
and follows them transitively. A pure module (spec, model, plan, the workload
kinds' declarations, analysis, figures) that reaches a forbidden module fails,
and the message prints the import chain.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "corridor"

#: Modules that run without root and without a network: whole stage packages left of the emulation, the results,
#: and the workload kinds' declarations and models.
PURE_PREFIXES = (
    "corridor.errors", "corridor.stats", "corridor.spec", "corridor.geography", "corridor.planning",
    "corridor.analytic", "corridor.validation", "corridor.results",
    "corridor.workloads.kind", "corridor.workloads.registry", "corridor.workloads.placement",
    "corridor.workloads.training.kind", "corridor.workloads.training.patterns", "corridor.workloads.training.model",
    "corridor.workloads.inference.kind", "corridor.workloads.inference.model", "corridor.workloads.inference.patterns",
    "corridor.cluster.spec", "corridor.cluster.placer",
)
#: What a pure module must never load: the network, its links' processes, the run-time workload code, the tools
#: that measure a running network, the command line, Mininet.
FORBIDDEN_PREFIXES = (
    "mininet", "corridor.emulation", "corridor.workloads.runner", "corridor.workloads.training.run",
    "corridor.workloads.inference.run", "corridor.workloads.bulk.run", "corridor.workloads.replay.run",
    "corridor.workloads.agents", "corridor.tools", "corridor.agent.runtime",
    "corridor.agent.training", "corridor.agent.inference", "corridor.agent.lifecycle", "corridor.agent.mpi_allreduce",
    "corridor.links.delayline", "corridor.links.netem", "corridor.links.userspace", "corridor.links.probe",
    "corridor.links.netem_selftest", "corridor.cli", "corridor.cluster.ssh", "corridor.cluster.doctor",
)


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = module.split(".") if is_package else module.split(".")[:-1]
                    parent = parent[: len(parent) - (node.level - 1)]
                    base = ".".join([*parent, base] if base else parent)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for imported in _top_level_imports(path, name):
            if imported.split(".")[0] != "corridor":
                targets.add(imported)
                continue
            # "from corridor.x import y": y may be a module or a name inside corridor.x
            targets.add(imported if imported in modules else imported.rsplit(".", 1)[0])
        graph[name] = {t for t in targets if t in modules or not t.startswith("corridor")}
    return graph


def _chain(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module reachable from ``start`` with one import chain to it."""
    seen: dict[str, list[str]] = {start: [start]}
    todo = [start]
    while todo:
        current = todo.pop()
        for nxt in sorted(graph.get(current, ())):
            if nxt not in seen:
                seen[nxt] = [*seen[current], nxt]
                todo.append(nxt)
    return seen


GRAPH = _graph()
PURE = sorted(m for m in GRAPH if _under(m, PURE_PREFIXES))


def test_the_walker_finds_the_pure_modules_and_their_imports() -> None:
    assert "corridor.results.verdict" in PURE and "corridor.spec.experiment" in PURE
    assert "corridor.workloads.registry" in GRAPH["corridor.spec.experiment"]
    # and it would see a forbidden import: the runner reaches the emulation API
    assert any(_under(m, FORBIDDEN_PREFIXES) for m in _chain(GRAPH, "corridor.workloads.runner"))


@pytest.mark.parametrize("module", PURE)
def test_pure_module_never_loads_the_emulation(module: str) -> None:
    reach = _chain(GRAPH, module)
    bad = {m: chain for m, chain in reach.items() if m != module and _under(m, FORBIDDEN_PREFIXES)}
    assert not bad, "\n".join(" -> ".join(chain) for chain in bad.values())


def test_no_two_classes_share_a_name() -> None:
    """A newcomer who greps for a class finds one: no class name is defined in two modules of the package."""
    seen: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(str(path.relative_to(PACKAGE.parent)))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
