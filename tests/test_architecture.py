"""The import rules of ARCHITECTURE.md, checked on the source: they hold or this test says where not."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rayspine"
INFERENCE = ("segment/infer.py", "autoencode/infer.py", "autoencode/networks", "segment/networks")
TRAINING = ("rayspine.segment.train", "rayspine.segment.command", "rayspine.autoencode.train", "rayspine.autoencode.sweep")
PURE = ("measure/instances.py", "measure/crops.py", "measure/geometry.py", "measure/scan.py", "measure/plausibility.py", "predict/cv.py",
        "interpret/traversal.py", "interpret/correlation.py", "stats.py", "segment/data.py")  # fmt: skip


def _imports(path: Path, text: str | None = None) -> list[tuple[str, list[str]]]:
    """(absolute module, names) of every import in a package file (or ``text`` as if it were that
    file), nested ones included."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def _files(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        path = PACKAGE / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def test_inference_never_imports_training():
    offenders = [
        (str(f.relative_to(PACKAGE)), target)
        for f in _files(*INFERENCE)
        for target, _ in _imports(f)
        if target.startswith(TRAINING)
    ]
    assert offenders == []


def test_no_private_name_is_imported_across_modules():
    offenders = [
        (str(f.relative_to(PACKAGE)), target, name)
        for f in PACKAGE.rglob("*.py")
        for target, names in _imports(f)
        if target.startswith("rayspine")
        for name in names
        if name.startswith("_")
    ]
    assert offenders == []


def test_science_modules_touch_neither_ray_nor_files():
    offenders = [
        (str(f.relative_to(PACKAGE)), target)
        for f in _files(*PURE)
        for target, _ in _imports(f)
        if target.split(".")[0] == "ray" or target in ("rayspine.io.store", "rayspine.io.scans", "rayspine.io.archive", "pathlib")
    ]
    assert offenders == []


def test_the_rules_see_relative_and_private_imports():
    assert any(t == "rayspine.io.cards" for t, _ in _imports(PACKAGE / "segment" / "infer.py"))
    assert _imports(PACKAGE / "autoencode" / "infer.py", "from .train import _augment") == [("rayspine.autoencode.train", ["_augment"])]
