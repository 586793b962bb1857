"""The import contract, read from the source (AST, no module is imported): programs on top, a library underneath.

- The library (every alphagrpo_jax module that is neither a program nor in a plug-in) never imports a program
  (train, sft, generate, export, report, evaluate, component_eval, tools.*) nor a plug-in (alphagrpo_jax.toy).
- Plug-ins import the library only, never a program; no program outside a plug-in imports a plug-in (configs
  name plug-ins, alphagrpo_jax/plugins.py imports them).
- No import cycle among alphagrpo_jax modules, function-local imports included.
- No `sys.path` edits in alphagrpo_jax/, configs/, tests/, benchmarks/ or docs/ (configs/ is a package).
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "alphagrpo_jax"
PROGRAMS = tuple(f"{PACKAGE}.{name}" for name in ("train", "sft", "generate", "export", "report", "evaluate",
                                                   "component_eval", "tools"))
PLUGINS = (f"{PACKAGE}.toy",)
SYS_PATH_DIRS = ("alphagrpo_jax", "configs", "tests", "benchmarks", "docs")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def modules_of(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """{dotted module name: file} of every .py file of `package` under `root` (packages by their __init__)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(module: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Modules of `known` that `module` imports anywhere in its file (top level and inside functions)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import a.b.c` of a non-module attribute path: its module
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def import_graph(root: pathlib.Path, package: str) -> dict[str, set[str]]:
    mods = modules_of(root, package)
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def layer_violations(graph: dict[str, set[str]], programs=PROGRAMS, plugins=PLUGINS) -> list[str]:
    """`importer -> imported: why` for every import against the layering (module docstring)."""
    out = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if _within(dep, plugins) and not _within(mod, plugins):
                out.append(f"{mod} -> {dep}: only plug-ins import a plug-in (name it in config.plugins)")
            elif _within(dep, programs) and not _within(mod, programs):
                kind = "plug-in" if _within(mod, plugins) else "library module"
                out.append(f"{mod} -> {dep}: a {kind} imports a program")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def sys_path_edits(root: pathlib.Path, dirs=SYS_PATH_DIRS) -> list[str]:
    """`file:line` of every `sys.path` mutation (a method call on it, or an assignment to it)."""
    out = []
    for d in dirs:
        for path in sorted((root / d).rglob("*.py")) if (root / d).is_dir() else ():
            found = []
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                targets = []
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    targets = [node.func.value]
                elif isinstance(node, (ast.Assign, ast.AugAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    targets = [t.value if isinstance(t, ast.Subscript) else t for t in targets]
                for t in targets:
                    if (isinstance(t, ast.Attribute) and t.attr == "path" and isinstance(t.value, ast.Name)
                            and t.value.id == "sys"):
                        found.append(node.lineno)
            out += [f"{path.relative_to(root)}:{line}" for line in sorted(found)]
    return out


# ------------------------------------------------------------------------------------------------ the repo

@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT, PACKAGE)


def test_the_library_imports_no_program_and_no_plugin(graph):
    assert layer_violations(graph) == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_no_sys_path_edits():
    assert sys_path_edits(ROOT) == []


def test_the_programs_and_the_plugin_exist(graph):
    """The contract names real modules (a rename would otherwise empty it silently)."""
    for name in ("train", "sft", "generate", "export", "report", "component_eval", "tools.compile_check",
                 "tools.compile_rt2i", "toy.plugin", "plugins"):
        assert f"{PACKAGE}.{name}" in graph, name
    assert graph[f"{PACKAGE}.train"], "the AST reader found no imports in train.py"


# ------------------------------------------------------------------------------------------------ the checker

def _package(tmp_path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return import_graph(tmp_path, PACKAGE)


def test_checker_finds_upward_imports_plugins_and_cycles(tmp_path):
    g = _package(tmp_path, {
        "alphagrpo_jax/__init__.py": "",
        "alphagrpo_jax/train.py": "from alphagrpo_jax import lib\n",
        "alphagrpo_jax/lib.py": "def f():\n    from alphagrpo_jax.train import main  # function-local counts\n",
        "alphagrpo_jax/rl/__init__.py": "",
        "alphagrpo_jax/rl/a.py": "from . import b\n",
        "alphagrpo_jax/rl/b.py": "import alphagrpo_jax.rl.a\nfrom alphagrpo_jax.toy import reward\n",
        "alphagrpo_jax/toy/__init__.py": "",
        "alphagrpo_jax/toy/reward.py": "from alphagrpo_jax.tools.check import x\n",
        "alphagrpo_jax/tools/__init__.py": "",
        "alphagrpo_jax/tools/check.py": "x = 1\n",
    })
    assert layer_violations(g) == [
        "alphagrpo_jax.lib -> alphagrpo_jax.train: a library module imports a program",
        "alphagrpo_jax.rl.b -> alphagrpo_jax.toy.reward: only plug-ins import a plug-in (name it in config.plugins)",
        "alphagrpo_jax.toy.reward -> alphagrpo_jax.tools.check: a plug-in imports a program",
    ]
    assert cycles(g) == [["alphagrpo_jax.lib", "alphagrpo_jax.train"], ["alphagrpo_jax.rl.a", "alphagrpo_jax.rl.b"]]


def test_checker_passes_a_clean_package(tmp_path):
    g = _package(tmp_path, {
        "alphagrpo_jax/__init__.py": "",
        "alphagrpo_jax/train.py": "import os\nfrom alphagrpo_jax import lib\nfrom alphagrpo_jax.lib import f\n",
        "alphagrpo_jax/lib.py": "import json\n\ndef f():\n    return json\n",
        "alphagrpo_jax/toy/__init__.py": "",
        "alphagrpo_jax/toy/plugin.py": "from alphagrpo_jax.lib import f\n",
    })
    assert g["alphagrpo_jax.train"] == {"alphagrpo_jax.lib"}
    assert layer_violations(g) == [] and cycles(g) == []


def test_checker_finds_sys_path_edits(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("import sys\nprint(sys.path)\nsys.path.insert(0, 'x')\n"
                                             "sys.path[:0] = ['y']\nsys.path += ['z']\n")
    assert sys_path_edits(tmp_path) == ["tests/t.py:3", "tests/t.py:4", "tests/t.py:5"]
