"""Check every TensorRT attribute adla uses against the REAL TensorRT Python bindings of 10.x and 11.x.

No GPU and no TensorRT libraries are needed. The bindings wheels (``tensorrt-cu12-bindings``,
``tensorrt-cu13-bindings``, about 5 MB each) hold the pybind11 module ``tensorrt_bindings/tensorrt.so``; it
links against libnvinfer, libnvinfer_plugin and libnvonnxparser (the multi-GB ``-libs`` wheels) but calls
only nine of their C functions (the ``create*_INTERNAL`` factories and the plugin registries), and none
while it is imported. So each version is installed with ``pip install --no-deps --target`` into its own
folder, tiny stand-in libraries with those sonames and symbols are compiled with ``cc``, and the module is
imported in a child process with them on ``LD_LIBRARY_PATH``: its classes, methods, properties and enum
members are the real ones, to introspect (nothing can be built or run with it).

What is checked (``usages``): in ``export/*.py`` and ``runtime/backends.py``, every attribute chain on the
TensorRT module (``trt.BuilderFlag.FP16``, names ``trt``, ``trtm``, ``trt_mod``, ``tensorrt``), and every
attribute used on a variable that holds a TensorRT object (``builder.create_network``,
``self.context.set_input_shape``: the variable names of ``RECEIVERS``). A line that ends in ``# trt<=10`` is
required only on TensorRT <= 10 (the calibrator and the precision flags), ``# trt<10`` only before 10.

    python scripts/trt_api_check.py --install          # install the bindings (VERSIONS) and check
    python scripts/trt_api_check.py                    # check the installed ones (exit 1 on a missing name)
    python scripts/trt_api_check.py --install-only     # CI: fetch them, the test runs the check
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / ".venv" / "trt-api"
# version -> wheel: 10.3 is JetPack 6's TensorRT, 10.16 the last 10.x, 11.4 the current one
VERSIONS = {"10.3.0": "tensorrt-cu12-bindings", "10.16.1.11": "tensorrt-cu12-bindings",
            "11.4.0.106": "tensorrt-cu13-bindings"}
SOURCES = ["export/*.py", "runtime/backends.py"]
MODULE_NAMES = {"trt", "trtm", "trt_mod", "tensorrt"}
RECEIVERS = {"builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition",
             "parser": "OnnxParser", "profile": "IOptimizationProfile", "engine": "ICudaEngine",
             "context": "IExecutionContext", "runtime": "Runtime", "registry": "IPluginRegistry",
             "creator": "IPluginCreator", "layer": "ILayer", "cache": "ITimingCache"}
# the C functions tensorrt.so imports from the TensorRT libraries (nm -D --undefined-only)
LIB_SYMBOLS = ["createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL", "createInferRuntime_INTERNAL",
               "createNvOnnxParserRefitter_INTERNAL", "createNvOnnxParser_INTERNAL", "getBuilderPluginRegistry",
               "getNvOnnxParserVersion", "getPluginRegistry", "initLibNvInferPlugins"]
LIBS = ["nvinfer", "nvinfer_plugin", "nvonnxparser"]
MARKER = re.compile(r"#\s*trt\s*(<=|<)\s*(\d+)")


# -- what adla uses --------------------------------------------------------------------------------
def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ["a", "b", "c"] (``self.x`` -> ["x"]); None for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    parts.reverse()
    return parts[1:] if parts[0] == "self" and len(parts) > 1 else parts


def usages(paths: list[Path]) -> list[dict]:
    """[{"name": "BuilderFlag.FP16" | "IBuilderConfig.set_flag", "where": "file:line", "max_major": int | None}]:
    each TensorRT attribute used, ``max_major`` the newest major version that must have it (from a marker)."""
    found: dict[tuple[str, int | None], dict] = {}
    for path in paths:
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Attribute):
                continue
            chain = _chain(node)
            if not chain or len(chain) < 2:
                continue
            if chain[0] in MODULE_NAMES and chain[1] != "__version__":
                name = ".".join(chain[1:])
            elif chain[0] in RECEIVERS and len(chain) == 2:
                name = f"{RECEIVERS[chain[0]]}.{chain[1]}"
            else:
                continue
            m = MARKER.search(lines[node.lineno - 1])
            max_major = None if m is None else int(m.group(2)) - (1 if m.group(1) == "<" else 0)
            where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{node.lineno}"
            found.setdefault((name, max_major), {"name": name, "where": where, "max_major": max_major})
    # a chain a.b.c also yields a.b: keep the longest only
    names = {k[0] for k in found}
    return sorted((u for (n, _), u in found.items() if not any(o.startswith(n + ".") for o in names)),
                  key=lambda u: u["name"])


def source_files() -> list[Path]:
    return sorted(p for pattern in SOURCES for p in REPO.glob(pattern))


# -- the real bindings -----------------------------------------------------------------------------
def install(version: str, root: Path = ROOT) -> Path:
    target = root / version
    if not (target / "tensorrt_bindings" / "tensorrt.so").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        f"{VERSIONS.get(version, 'tensorrt-cu12-bindings')}=={version}"], check=True)
    return target


def stub_libs(root: Path = ROOT) -> Path:
    """Stand-in libnvinfer/_plugin/libnvonnxparser .so.10 and .so.11 (the nine imported functions return 0)."""
    out = root / "stub-libs"
    if all((out / f"lib{lib}.so.{m}").is_file() for lib in LIBS for m in (10, 11)):
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc) to build the stand-in TensorRT libraries")
    out.mkdir(parents=True, exist_ok=True)
    src = out / "stub.c"
    src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in LIB_SYMBOLS))
    for major in (10, 11):
        for lib in LIBS:
            name = f"lib{lib}.so.{major}"
            subprocess.run([cc, "-shared", "-fPIC", "-o", str(out / name), f"-Wl,-soname,{name}", str(src)],
                           check=True)
    return out


_PROBE = """
import json, sys
import tensorrt_bindings as trt
result = {"version": trt.__version__, "missing": []}
for name in json.loads(sys.argv[1]):
    obj = trt
    for part in name.split("."):
        if not hasattr(obj, part):
            result["missing"].append(name)
            break
        obj = getattr(obj, part)
print(json.dumps(result))
"""


def probe(version_dir: Path, names: list[str], libs: Path) -> dict:
    """Import the bindings in ``version_dir`` (child process) and list which ``names`` they lack."""
    env = {**os.environ, "PYTHONPATH": str(version_dir),
           "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(libs), os.environ.get("LD_LIBRARY_PATH")]))}
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(names)], env=env, capture_output=True,
                          text=True, check=False, cwd=str(version_dir))
    if proc.returncode != 0:
        raise RuntimeError(f"cannot import the TensorRT bindings in {version_dir}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(versions: list[str], root: Path = ROOT, paths: list[Path] | None = None) -> list[str]:
    """Problems (empty when every used name exists in every version that must have it); prints a table."""
    uses = usages(paths or source_files())
    libs = stub_libs(root)
    problems = []
    for version in versions:
        major = int(version.split(".")[0])
        needed = [u for u in uses if u["max_major"] is None or major <= u["max_major"]]
        got = probe(root / version, [u["name"] for u in needed], libs)
        if got["version"] != version:
            problems.append(f"{root / version} holds TensorRT {got['version']}, not {version}")
        missing = set(got["missing"])
        print(f"TensorRT {got['version']}: {len(needed) - len(missing)}/{len(needed)} attributes used by adla "
              f"present ({len(uses) - len(needed)} marked for older versions not required)")
        for u in needed:
            if u["name"] in missing:
                problems.append(f"TensorRT {version} has no {u['name']} (used at {u['where']})")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--versions", nargs="+", default=list(VERSIONS))
    p.add_argument("--root", type=Path, default=ROOT, help=f"install folder (default {ROOT})")
    p.add_argument("--install", action="store_true", help="pip-install missing bindings first")
    p.add_argument("--install-only", action="store_true", help="install the bindings and stand-in libraries only")
    args = p.parse_args(argv)
    if args.install or args.install_only:
        for v in args.versions:
            install(v, args.root)
        stub_libs(args.root)
        if args.install_only:
            return 0
    problems = check(args.versions, args.root)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
