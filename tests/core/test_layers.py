"""Imports point one way (README, "Layout"; the design notes that came with the project, outside this
repository, say the same): core <- stages <- app.

pyproject.toml maps top-level folders into the one ``adla`` namespace (setuptools ``package-dir``), so
linters and import graphs cannot tell ``adla.train`` lives in ``train/``: this test is the guard. It reads
every ``.py`` file of the mapped folders with ``ast`` and checks every import, at the top of the file or
inside a function, ``import x`` or ``from x import y``, relative ones resolved, plus
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.

Layers, and what each may import (besides itself):

- core    ``adla``, ``adla.data``                 -> nothing (no stage, no app; not even lazily)
- train   ``adla.train``, ``adla.train.assigners`` -> core
- export  ``adla.export``                         -> core
- runtime ``adla.runtime``                        -> core, export (engine/ONNX metadata); never train
- app     ``adla.app``                            -> core, train, export, runtime; nothing imports it

Within a layer the modules form no import cycle (imports inside functions count).
"""

from __future__ import annotations

import ast
import itertools
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# the layer of each package of pyproject's package-dir
LAYER_OF_PACKAGE = {
    "adla": "core",
    "adla.data": "core",
    "adla.train": "train",
    "adla.train.assigners": "train",
    "adla.export": "export",
    "adla.runtime": "runtime",
    "adla.app": "app",
}
MAY_IMPORT = {
    "core": {"core"},
    "train": {"core", "train"},
    "export": {"core", "export"},
    "runtime": {"core", "export", "runtime"},
    "app": {"core", "train", "export", "runtime", "app"},
}


def package_dirs() -> dict[str, Path]:
    """pyproject's ``package-dir``: package name -> folder."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    return {pkg: ROOT / folder for pkg, folder in tool["package-dir"].items()}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name (the longest matching package), or None outside ``adla``."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        layer = LAYER_OF_PACKAGE.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return None


def imports_of(source: str, module: str, is_package: bool = False,
               known: set[str] | frozenset[str] = frozenset()) -> list[tuple[int, str, str]]:
    """Every import in ``source`` (the code of ``module``): (line, dotted target, the statement as written).

    ``from p import name`` targets ``p.name`` when that is a module in ``known`` (a submodule import),
    else ``p``. Relative imports are resolved against ``module`` (a package's ``__init__`` when
    ``is_package``).
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            written = f"from {'.' * node.level}{node.module or ''} import "
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # ``from adla import train`` names a package even when ``known`` is empty
                full = sub if sub in known or sub in LAYER_OF_PACKAGE else target
                found.append((node.lineno, full, written + alias.name))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value, f"{name}({node.args[0].value!r})"))
    return found


def violations(source: str, module: str, path: str, is_package: bool = False,
               known: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The imports of ``source`` (the code of ``module`` in file ``path``) that break the layer rules;
    ``known``: the modules that exist (see ``imports_of``)."""
    own = layer_of(module)
    assert own is not None, f"{path}: module {module} is in no layer"
    bad = []
    for line, target, written in imports_of(source, module, is_package, known):
        other = layer_of(target)
        if other is not None and other not in MAY_IMPORT[own]:
            bad.append(f"{path}:{line}: `{written}` ({own} {module} imports {other} {target}; "
                       f"{own} may import only {', '.join(sorted(MAY_IMPORT[own]))})")
    return bad


def source_files() -> list[tuple[str, Path, bool]]:
    """(module name, file, is a package __init__) for every .py file of every mapped folder."""
    files = []
    for pkg, folder in sorted(package_dirs().items()):
        for path in sorted(folder.glob("*.py")):
            is_package = path.name == "__init__.py"
            files.append((pkg if is_package else f"{pkg}.{path.stem}", path, is_package))
    return files


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports) as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_mapped_package_has_a_layer_and_a_folder():
    dirs = package_dirs()
    assert set(dirs) == set(LAYER_OF_PACKAGE), (
        "pyproject package-dir and LAYER_OF_PACKAGE differ: give each package a layer here "
        f"(unmapped: {sorted(set(dirs) - set(LAYER_OF_PACKAGE))}, stale: {sorted(set(LAYER_OF_PACKAGE) - set(dirs))})")
    for pkg, folder in dirs.items():
        assert (folder / "__init__.py").is_file(), f"{pkg}: {folder} has no __init__.py"
    # a package folder inside a mapped one must be mapped too, or its files escape this test
    mapped = {folder.resolve() for folder in dirs.values()}
    for folder in dirs.values():
        for init in folder.glob("*/__init__.py"):
            assert init.parent.resolve() in mapped, f"{init.parent} is a package missing from pyproject package-dir"


def test_imports_point_one_way():
    files = source_files()
    known = {m for m, _, _ in files}
    bad = []
    for module, path, is_package in files:
        bad += violations(path.read_text(), module, str(path.relative_to(ROOT)), is_package, known)
    assert len(files) > 50, f"only {len(files)} files found: is the package-dir mapping read right?"
    assert not bad, "imports against the layers (README, Layout):\n" + "\n".join(bad)


@pytest.mark.parametrize("layer", ["core", "train", "export", "runtime", "app"])
def test_modules_of_a_layer_form_no_import_cycle(layer):
    files = [(m, p, pkg) for m, p, pkg in source_files() if layer_of(m) == layer]
    assert len(files) >= 3, f"only {len(files)} modules found in layer {layer}"
    known = {m for m, _, _ in files}
    graph: dict[str, set[str]] = {m: set() for m in known}
    where: dict[tuple[str, str], str] = {}
    for module, path, is_package in files:
        for line, target, written in imports_of(path.read_text(), module, is_package, known):
            if target in known and target != module:
                graph[module].add(target)
                where.setdefault((module, target), f"{path.relative_to(ROOT)}:{line}: `{written}`")
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in {layer}: " + " -> ".join(cycle) + "\n" + "\n".join(
        where[(a, b)] for a, b in itertools.pairwise(cycle))


# the checker itself: it must catch what it is there to catch

@pytest.mark.parametrize(("module", "source", "offending"), [
    ("adla.metrics", "import torch\n\ndef f():\n    from adla.train.loop import train\n", "adla.train.loop"),
    ("adla.data.coco", "from .. import export\n", "adla.export"),  # relative, a package named as a name
    ("adla.data.coco", "from ..app.cli import main\n", "adla.app.cli"),
    ("adla.model", "import adla.runtime.pipeline\n", "adla.runtime.pipeline"),
    ("adla.model", "import importlib\nm = importlib.import_module('adla.train.loss')\n", "adla.train.loss"),
    ("adla.runtime.backends", "def f():\n    from adla.train import loss\n", "from adla.train import loss"),
    ("adla.runtime.backends", "from ..train.loss import DetectionLoss\n", "adla.train.loss"),
    ("adla.export.parity", "from adla.runtime.merge import nms_merge\n", "adla.runtime.merge"),
    ("adla.train.assigners.atss", "from ...export import onnx_export\n", "imports export adla.export"),
    ("adla.train.loop", "from adla.app.demo import run_demo\n", "adla.app.demo"),
])
def test_checker_catches_a_violation(module, source, offending):
    found = violations(source, module, "x/synthetic.py")
    assert len(found) == 1, found
    assert found[0].startswith("x/synthetic.py:") and offending in found[0]


@pytest.mark.parametrize(("module", "source", "is_package"), [
    ("adla.metrics", "import torch\nfrom adla.boxes import box_iou\nfrom .data import coco\n", False),
    ("adla.runtime.infer_checks", "def f():\n    from adla.export.onnx_export import read_metadata\n", False),
    ("adla.export", "from . import parity\nfrom .onnx_export import export_onnx\n", True),
    ("adla.app.cli", "from adla.train import commands\nfrom adla.runtime import commands as rc\n", False),
])
def test_checker_passes_allowed_imports(module, source, is_package):
    assert violations(source, module, "x/synthetic.py", is_package) == []


def test_relative_imports_resolve_and_cycles_are_found():
    src = "from .parity import run_parity\nfrom . import session\nfrom ..io import read_json\n"
    targets = [t for _, t, _ in imports_of(src, "adla.export.onnx_export", known={"adla.export.session"})]
    assert targets == ["adla.export.parity", "adla.export.session", "adla.io"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_building_the_command_line_imports_no_torch():
    """`adla --help` and argument errors stay instant: the parser is built without importing torch."""
    import subprocess
    import sys

    code = ("import sys; from adla.app.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'torchvision', 'onnxruntime', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
