"""Make the ``tensorrt-stubs`` package usable by mypy.

The published stubs (10.13.0.35.1) install as ``tensorrt/__init__.pyi`` without a ``py.typed`` marker
(mypy then skips them) and contain lines Python cannot parse (a parameter named ``in``; required
parameters after defaulted ones). This copies them to a folder, repairs those lines, and returns the
folder to put on MYPYPATH:

    python tests/export/trt_stubs.py /tmp/trt-stubs
    MYPYPATH=/tmp/trt-stubs mypy --config-file /tmp/trt-stubs/mypy.ini export/tensorrt_build.py

The written ``mypy.ini`` silences errors inside the stubs themselves and in modules outside export/.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import sysconfig
from pathlib import Path

MYPY_INI = """[mypy]
follow_imports = silent
ignore_missing_imports = True

[mypy-tensorrt.*,tensorrt_bindings.*,tensorrt,tensorrt_bindings]
ignore_errors = True
"""


def _fix_signature(line: str) -> str:
    line = re.sub(r"([(,] ?)in: ", r"\1in_: ", line)
    head, sep, rest = line.partition("(")
    params, close, tail = rest.rpartition(")")
    parts, seen_default = [], False
    for p in params.split(", "):
        if "=" in p or p.startswith("*"):
            seen_default = seen_default or "=" in p
        elif seen_default and ":" in p:
            p = p + " = ..."
        parts.append(p)
    return head + sep + ", ".join(parts) + close + tail


def repair(path: Path) -> None:
    lines = path.read_text().splitlines()
    for _ in range(200):
        try:
            ast.parse("\n".join(lines))
            break
        except SyntaxError as exc:
            i = (exc.lineno or 1) - 1
            fixed = _fix_signature(lines[i])
            if fixed == lines[i]:
                raise
            lines[i] = fixed
    path.write_text("\n".join(lines) + "\n")


def make_stub_dir(dest: str | Path) -> Path:
    """Copy and repair the installed TensorRT stubs into ``dest``; returns ``dest``."""
    site = Path(sysconfig.get_paths()["purelib"])
    dest = Path(dest)
    for pkg in ("tensorrt", "tensorrt_bindings"):
        src = site / pkg
        if not (src / "__init__.pyi").is_file():
            raise FileNotFoundError(f"{src}/__init__.pyi not found: pip install tensorrt-stubs")
        shutil.rmtree(dest / pkg, ignore_errors=True)
        shutil.copytree(src, dest / pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        for pyi in (dest / pkg).glob("*.pyi"):
            repair(pyi)
    (dest / "mypy.ini").write_text(MYPY_INI)
    return dest


if __name__ == "__main__":
    print(make_stub_dir(sys.argv[1] if len(sys.argv) > 1 else "/tmp/trt-stubs"))
