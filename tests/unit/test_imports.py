"""The imports between lynx's modules, read statically (every `import` and `from` statement, those inside functions
included; those under `if TYPE_CHECKING:` left out, as they never run): no cycle anywhere in services/ and operators/,
and the direction between packages that the README's layout section states.

- `lynx_budget` (the budget controller) may import `lynx`; in `lynx`, only the command line and the local run, which
  dispatch `lynx budget` and start the budget loop (`lynx.cli`, `lynx.local`), import `lynx_budget`.
- Nothing outside the tools (`lynx.tools`), the local run and the command line imports them: the services, their
  kernel (`lynx.service`) and `lynx_budget` never do.
- A service package (gateway, tokenizer, retriever, decoder, auditor) imports no other service package: what one
  needs of another crosses through `lynx.contracts` or a neutral package (`lynx.accounting`, `lynx.tokenization`...).
  Only the tools (the command line, the local run, `lynx.tools`) import service packages from outside them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (REPO / "services", REPO / "operators")
SERVICE_PACKAGES = ("lynx.gateway", "lynx.tokenizer", "lynx.retriever", "lynx.decoder", "lynx.auditor")
TOOLS = ("lynx.cli", "lynx.local", "lynx.tools")
BUDGET_CONTROLLER_USERS = ("lynx.cli", "lynx.local")

Graph = Mapping[str, set[str]]


def module_files(roots: Iterable[Path]) -> dict[str, Path]:
    """Every module under ``roots`` by its dotted name (a package by its own name, not ``__init__``)."""
    modules = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def runs_only_for_type_checkers(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(tree: ast.AST, package: str, modules: Mapping[str, Path]) -> set[str]:
    """The ones of ``modules`` that ``tree`` imports, relative imports resolved against ``package``:
    ``from a import b`` imports the module ``a.b`` if there is one, else (a name defined in ``a``) ``a``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and runs_only_for_type_checkers(child):
                for statement in child.orelse:
                    visit_statement(statement)
            else:
                visit_statement(child)

    def visit_statement(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[:len(parts) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
        visit(node)

    visit(tree)
    return found & modules.keys()


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Each of ``modules``' imports among them."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imported_modules(ast.parse(path.read_text(), str(path)), package, modules) - {name}
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle for each group of modules that import each other, round and back to its first module
    (``[a, b, a]``), the groups and each cycle's start in name order."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(module: str) -> None:  # Tarjan's strongly connected components, iterative: no recursion limit
        work = [(module, iter(sorted(graph.get(module, ()))))]
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        while work:
            current, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = lowest[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                    break
                if target in on_stack:
                    lowest[current] = min(lowest[current], index[target])
            else:
                work.pop()
                if work:
                    lowest[work[-1][0]] = min(lowest[work[-1][0]], lowest[current])
                if lowest[current] == index[current]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == current:
                            break
                    if len(group) > 1 or current in graph.get(current, ()):
                        groups.append(group)

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return sorted((cycle_through(group, graph) for group in groups), key=lambda cycle: cycle[0])


def cycle_through(group: set[str], graph: Graph) -> list[str]:
    """A shortest cycle from the group's first module back to it, by the group's own edges."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(graph.get(module, ())):
                if target == start:
                    return [*paths[module], start]
                if target in group and target not in paths:
                    paths[target] = [*paths[module], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{sorted(group)} is not a cycle")  # a strongly connected group always has one


def inside(module: str, packages: Iterable[str]) -> str | None:
    """The first of ``packages`` that ``module`` is or lies in, or None."""
    return next((p for p in packages if module == p or module.startswith(f"{p}.")), None)


def direction_violations(graph: Graph) -> list[str]:
    """The imports that go against the direction the module docstring states."""
    wrong = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if (module.startswith("lynx.") and target.partition(".")[0] == "lynx_budget"
                    and not inside(module, BUDGET_CONTROLLER_USERS)):
                wrong.append(f"{module} -> {target}: only {', '.join(BUDGET_CONTROLLER_USERS)} import lynx_budget")
            if inside(target, TOOLS) and not inside(module, TOOLS):
                wrong.append(f"{module} -> {target}: the tools, the local run and the command line are imported by "
                             "each other only, never by a service, the kernel or the budget controller")
            service = inside(target, SERVICE_PACKAGES)
            if service and inside(module, SERVICE_PACKAGES) not in (service,) and not inside(module, TOOLS):
                wrong.append(f"{module} -> {target}: a service's modules are imported by that service and the tools "
                             "only; cross through lynx.contracts or a neutral package")
    return wrong


def test_no_module_in_services_or_operators_imports_itself_back():
    graph = import_graph(module_files(SOURCE_ROOTS))
    # The walk found the tree: both packages, and their imports of each other (an empty graph has no cycle either).
    assert len(graph) > 100 and "lynx_budget.policy" in graph and "lynx.gateway.orchestrator" in graph
    assert "lynx.gateway.budgets" in graph["lynx.gateway.orchestrator"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_imports_go_the_stated_direction_between_packages():
    graph = import_graph(module_files(SOURCE_ROOTS))
    assert any(target.startswith("lynx.") for target in graph["lynx_budget.local"])
    assert any(target.startswith("lynx_budget.") for target in graph["lynx.cli"])
    wrong = direction_violations(graph)
    assert not wrong, "\n".join(wrong)


def test_the_cycle_finder_names_each_planted_cycle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a", "f"}, "f": {"e"}, "g": {"g"},
             "h": {"d"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"], ["g", "g"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []


def test_the_shortest_way_round_is_named_when_a_group_has_several():
    graph = {"a": {"b", "x"}, "b": {"c"}, "c": {"a"}, "x": {"a"}}
    assert find_cycles(graph) == [["a", "x", "a"]]


def test_direction_violations_name_a_service_importing_another_and_an_unlisted_user_of_the_controller():
    graph = {"lynx.gateway.app": {"lynx.decoder.settings", "lynx.gateway.budgets", "lynx.contracts.decoder"},
             "lynx.accounting.pricing": {"lynx.decoder.shares"}, "lynx.local.run": {"lynx.gateway.app",
                                                                                     "lynx_budget.local"},
             "lynx.telemetry.metrics": {"lynx_budget.spend"}, "lynx_budget.local": {"lynx.contracts.budgets"},
             "lynx.service.app": {"lynx.tools.models.cache"}, "lynx.tools.chaos.cli": {"lynx.local.registry"}}
    assert [line.partition(":")[0] for line in direction_violations(graph)] == [
        "lynx.accounting.pricing -> lynx.decoder.shares", "lynx.gateway.app -> lynx.decoder.settings",
        "lynx.service.app -> lynx.tools.models.cache", "lynx.telemetry.metrics -> lynx_budget.spend"]


def test_the_walk_reads_imports_in_functions_and_relative_ones_and_skips_those_for_type_checkers(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
                                  "else:\n    import pkg.d\n\ndef later():\n    from . import b\n")
    (package / "b.py").write_text("from .c import thing\n")
    (package / "c.py").write_text("import os\nthing = os.sep\n")
    (package / "d.py").write_text("from pkg.a import later\n")
    graph = import_graph(module_files([tmp_path]))
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b", "pkg.d"}, "pkg.b": {"pkg.c"}, "pkg.c": set(),
                     "pkg.d": {"pkg.a"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.d", "pkg.a"]]
