"""The package's layers, read from the source: no import cycle, and no module imports a layer
above its own (imports inside functions count too).

    interfaces, config, inputs  <  models  <  caches  <  strategies (samplers, speculative, vision)
    <  loop, api, registry  <  bench, cli, integrations, zoo
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "paradecode"

LAYERS = [
    {"paradecode.interfaces", "paradecode.config", "paradecode.inputs"},
    {"paradecode.models", "paradecode.zoo"},
    {"paradecode.caches"},
    {"paradecode.samplers", "paradecode.speculative", "paradecode.vision"},
    {"paradecode.loop", "paradecode.api", "paradecode.registry", "paradecode"},
    {"paradecode.bench", "paradecode.cli", "paradecode.integrations", "paradecode.diffusers"},
]
# Modules of a family's package that sit above its strategies: its entry point and its demos.
ABOVE = {"paradecode.vision.api": 4, "paradecode.vision.demo": 5, "paradecode.vision.cli": 5,
         "paradecode.speculative.cli": 5, "paradecode.speculative.continuous": 4,
         "paradecode.__main__": 5}  # `python -m paradecode`: the CLI entry point


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str, known: set) -> set:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            # ``from pkg import module`` depends on the module; ``from pkg import name`` on pkg
            targets = subs + ([base] if any(t not in known for t in subs) else [])
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    known = set(files)
    return {m: imports(p, m, known) for m, p in files.items()}


def packages() -> set:
    return {module_name(p) for p in PKG.rglob("__init__.py")}


def layer(module: str) -> int:
    if module in ABOVE:
        return ABOVE[module]
    best = None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > best[1]):
                best = (i, len(n))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def test_no_import_cycle():
    g = graph()
    state: dict = {}

    def visit(m, path):
        state[m] = "open"
        for n in g[m]:
            if state.get(n) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in g:
        if m not in state:
            visit(m, [m])


def test_no_module_imports_a_layer_above_its_own():
    """A package's ``__init__`` may re-export its own modules (a name hub, not a dependency)."""
    pkgs = packages()
    bad = [(m, n) for m, deps in graph().items() for n in deps
           if layer(n) > layer(m) and not (m in pkgs and n.startswith(m + "."))]
    assert not bad, "imports upward: " + ", ".join(f"{m} -> {n}" for m, n in bad)
