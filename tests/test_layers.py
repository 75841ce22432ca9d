"""The layer order of DESIGN.md section 2, checked on every module's imports (read with ast,
nothing imported): core, data, models, methods, evaluate, analysis, engine, report, api, cli; a
module imports only from its own layer and the layers above it. Also: no two modules import
each other at module level (directly or round a longer loop)."""

from __future__ import annotations

import ast
from pathlib import Path

import ribench

PACKAGE = Path(ribench.__file__).parent
# DESIGN.md section 2, top to bottom. The package root (``__version__``) and ``presets`` (TOML
# files, no code) import nothing and sit with core.
LAYERS = ["core", "data", "models", "methods", "evaluate", "analysis", "engine", "report", "api", "cli"]
LEVEL = {name: i for i, name in enumerate(LAYERS)} | {"": 0, "presets": 0}

# Imports against the order that remain, each with its reason. (source module, imported module).
# Every other module imports only from its own layer and the layers above it. A new entry needs a
# reason that the layer order cannot serve.
ALLOWED: dict[tuple[str, str], str] = {
    ("ribench", "ribench.api"): "the package root exports the Python API (ribench.run, ribench.open, ...), "
                                "imported on first use only",
}


def find_modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package`` (a package folder)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = find_modules(PACKAGE)


def _resolve(source: str, is_package: bool, node: ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    """The modules a ``from ... import ...`` names: the module itself, or each imported name
    that is a submodule of it."""
    if node.level:
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{module}.{alias.name}"
        out.append(sub if sub in modules else module)
    return out


def imports(source: str, module_level_only: bool = False, modules: dict[str, Path] = MODULES) -> set[str]:
    """Every module of the package that ``source`` imports, at any depth of its code (or at
    module level only: outside functions and classes)."""
    path = modules[source]
    root = source.split(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    if module_level_only:  # the module body, with what sits under its if/try blocks
        nodes = [n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 for n in ast.walk(top)]
    else:
        nodes = list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.update(_resolve(source, path.name == "__init__.py", node, modules))
    return {m for m in out if m == root or m.startswith(root + ".")}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(modules: dict[str, Path] = MODULES) -> dict[tuple[str, str], str]:
    """(source, imported) -> why, for every import of a module from a layer below its own."""
    out = {}
    for source in modules:
        for target in imports(source, modules=modules):
            if LEVEL[layer(target)] > LEVEL[layer(source)]:
                out[(source, target)] = f"{layer(source)} imports {layer(target)}"
    return out


def test_every_module_has_a_layer():
    unknown = sorted({layer(m) for m in MODULES} - set(LEVEL))
    assert not unknown, f"modules outside the layers of DESIGN.md section 2: {unknown}; add them to LAYERS"


def test_imports_follow_the_layer_order():
    found = violations()
    new = {k: v for k, v in found.items() if k not in ALLOWED}
    assert not new, "imports against the layer order (DESIGN.md section 2): " + "; ".join(
        f"{s} -> {t} ({why})" for (s, t), why in sorted(new.items()))
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"allowed exceptions that no longer occur, remove them from ALLOWED: {stale}"


def module_cycles(modules: dict[str, Path] = MODULES) -> list[list[str]]:
    """The groups of modules that import each other at module level (strongly connected
    components of more than one module, Tarjan's algorithm)."""
    graph = {m: imports(m, module_level_only=True, modules=modules) & set(modules) for m in modules}
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return sorted(cycles)


def test_no_module_level_import_cycles():
    cycles = module_cycles()
    assert not cycles, f"modules that import each other at module level: {cycles}"


# ------------------------------------------------------------------ the checker itself


def test_the_checker_sees_relative_lazy_and_submodule_imports(tmp_path):
    """On a small package written here: absolute and relative imports (of a name, of a
    submodule, several levels up), an import inside a function, and a backward one."""
    files = {
        "pkg/__init__.py": "",
        "pkg/core/__init__.py": "from .types import T\n",
        "pkg/core/types.py": "import os\nT = 1\n",
        "pkg/data/__init__.py": "from . import digits\n",
        "pkg/data/digits/__init__.py": "from ...core.types import T\nfrom ... import core\n",
        "pkg/data/digits/v2.py": "from . import helper\nfrom ..digits import T\n",
        "pkg/data/digits/helper.py": "from . import v2\n\ndef f():\n    from pkg.engine import run\n    return run\n",
        "pkg/engine.py": "import pkg.data.digits.v2\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    mods = find_modules(tmp_path / "pkg")
    assert set(mods) == {"pkg", "pkg.core", "pkg.core.types", "pkg.data", "pkg.data.digits", "pkg.data.digits.v2",
                         "pkg.data.digits.helper", "pkg.engine"}
    assert imports("pkg.core", modules=mods) == {"pkg.core.types"}
    assert imports("pkg.core.types", modules=mods) == set()  # os is outside the package
    assert imports("pkg.data", modules=mods) == {"pkg.data.digits"}
    assert imports("pkg.data.digits", modules=mods) == {"pkg.core.types", "pkg.core"}
    assert imports("pkg.data.digits.v2", modules=mods) == {"pkg.data.digits.helper", "pkg.data.digits"}
    helper = "pkg.data.digits.helper"
    assert imports(helper, modules=mods) == {"pkg.data.digits.v2", "pkg.engine"}  # inside a function: counted
    assert imports(helper, module_level_only=True, modules=mods) == {"pkg.data.digits.v2"}
    assert imports("pkg.engine", modules=mods) == {"pkg.data.digits.v2"}
    assert layer(helper) == "data" and layer("pkg.engine") == "engine" and layer("pkg") == ""
    assert violations(mods) == {(helper, "pkg.engine"): "data imports engine"}  # engine -> data is in order
    assert module_cycles(mods) == [[helper, "pkg.data.digits.v2"]]  # the lazy helper -> engine -> v2 is no cycle
