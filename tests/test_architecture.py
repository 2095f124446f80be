"""The house rules, checked on the source: the layers (the root modules; import-linter checks the
packages, see .importlinter), no import cycle, no module over 600 lines, no function over 60 lines
without a comment saying why, and the store keeping to the protocol the engine works against."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from store.protocols import PositionRepository
from store.trading import TradingStore

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ("agent.py", "consciousness_mcp.py", "signal_scenarios.py", "tool_executor.py", "position_monitor.py",
              "signals.py", "consciousness_notify.py", "oversight", "runner", "engine", "brokers", "store", "news",
              "ops", "data", "config", "core")

# Top (0) to bottom (6): a module may import its own layer and the layers below it. The same table as
# .importlinter's layers contract, with the root modules import-linter cannot read placed in it.
LAYERS = {
    "agent": 0, "consciousness_mcp": 0, "signal_scenarios": 0, "oversight": 0,
    "runner": 1,
    "tool_executor": 2,
    "position_monitor": 3,
    "engine": 4,
    "brokers": 5, "store": 5, "news": 5, "ops": 5, "consciousness_notify": 5, "data.market": 5,
    "core": 6, "signals": 6, "config": 6, "data": 6, "brokers.base": 6, "brokers.fees": 6,
}
ROOT_MODULES = ("agent", "consciousness_mcp", "signal_scenarios", "tool_executor", "position_monitor", "signals",
                "consciousness_notify")
LONG_FUNCTION_LINES = 60
WHY_LONG = "# Long:"  # the comment right above a longer function says why it stays in one piece


def _files() -> list[Path]:
    out = []
    for name in PRODUCTION:
        path = ROOT / name
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in _files()}


def _is_main_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _imports(path: Path) -> set[str]:
    """The project modules ``path`` imports, at the top or inside functions alike; not those of its
    ``if __name__ == "__main__":`` block, which runs only when the file is the program (an entry point:
    ``python signals.py`` runs its self-test)."""
    tree = ast.parse(path.read_text())
    tree.body = [n for n in tree.body if not _is_main_block(n)]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{module} has no layer: add it to LAYERS and to .importlinter")


def test_every_production_module_has_a_layer():
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", ROOT_MODULES)
def test_a_root_module_imports_only_its_own_layer_and_below(module):
    upward = sorted(m for m in _imports(MODULES[module]) if _layer(m) < _layer(module))
    assert upward == [], f"{module} (layer {_layer(module)}) imports a higher layer: {upward}"


def test_no_import_cycle_among_the_projects_modules():
    graph = {m: _imports(p) - {m} for m, p in MODULES.items()}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == [], f"modules that import each other: {cycles}"


def test_no_module_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in _files() if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def test_a_function_over_60_lines_says_why_right_above_it():
    unexplained = []
    for path in _files():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.end_lineno - node.lineno + 1 <= LONG_FUNCTION_LINES:
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            above = lines[first - 2].strip() if first >= 2 else ""
            if not above.startswith(WHY_LONG):
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert unexplained == []


def test_the_trading_store_keeps_to_the_protocol_the_engine_works_against():
    for name, member in inspect.getmembers(PositionRepository, inspect.isfunction):
        if name.startswith("_"):
            continue
        implemented = getattr(TradingStore, name, None)
        assert implemented is not None, f"TradingStore has no {name}"
        assert inspect.signature(implemented).parameters.keys() == inspect.signature(member).parameters.keys(), name
