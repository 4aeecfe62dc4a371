"""The layering of docs/architecture.md, checked on the source: stages share layers, never each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import hf_transfer_seg

PACKAGE = Path(hf_transfer_seg.__file__).resolve().parent
STAGES = ("pretrain", "scoring", "finetune", "report", "space")
WIRING = ("cli", "demo")  # the command line and the demo wire the stages together
MAX_LINES = 650  # "about 600"
EXEMPT_FROM_SIZE: tuple[str, ...] = ()


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    part = path.relative_to(PACKAGE).parts[0]
    return part[:-3] if part.endswith(".py") else part


_MODULE_PATH = re.compile(r"hf_transfer_seg(\.[A-Za-z_]\w*)+")


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(n.body[0].value) for n in ast.walk(tree)
        if isinstance(n, nodes) and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }


def _imported(path: Path, package: Path = PACKAGE) -> set[str]:
    """Every ``hf_transfer_seg.<layer>`` a module imports: ``import``/``from`` statements at module level or inside
    functions, relative ones (``from ..report import x``) resolved against the module's own package, and module
    paths written as strings (``importlib.import_module("hf_transfer_seg.report.summary")``, a ``_lazy``
    ``_SUBMOD_ATTRS`` table, ``__import__``): any string that is exactly a dotted ``hf_transfer_seg.…`` name, docstrings
    excepted (prose may name other stages)."""
    tree = ast.parse(path.read_text(), str(path))
    here = ["hf_transfer_seg", *path.relative_to(package).with_suffix("").parts]
    docstrings = _docstrings(tree)
    layers = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "hf_transfer_seg"]
        elif isinstance(node, ast.ImportFrom):  # relative: level 1 is the module's own package
            base = here[: len(here) - node.level]
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{a.name}" for a in node.names if module == "hf_transfer_seg"]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            names = [node.value] if _MODULE_PATH.fullmatch(node.value) else []
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "hf_transfer_seg" and len(parts) > 1:
                layers.add(parts[1])
    return layers


def test_the_walker_sees_nested_and_from_package_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from hf_transfer_seg import hub\n"
        "def f():\n    from hf_transfer_seg.scoring.card import x\n    import hf_transfer_seg.report.table\n"
    )
    assert _imported(module, tmp_path) == {"hub", "scoring", "report"}


def test_the_walker_sees_relative_lazy_and_string_imports(tmp_path):
    """What an AST walk of import statements alone would miss; prose in docstrings is not an import."""
    stage = tmp_path / "finetune"
    stage.mkdir()
    module = stage / "m.py"
    module.write_text(
        '"""Main\'s summary is the report\'s (:func:`hf_transfer_seg.report.summary.update_main_summary`)."""\n'
        "import importlib\n"
        "from ..pretrain import hooks\n"
        "from . import loop\n"
        "from .. import models\n"
        "_SUBMOD_ATTRS = {'hf_transfer_seg.space.ui': ['build']}\n"
        "def f():\n"
        '    """Uses hf_transfer_seg.baselines"""\n'
        "    return importlib.import_module('hf_transfer_seg.scoring.card'), __import__('hf_transfer_seg.report')\n"
        "LABEL = 'see hf_transfer_seg.data.registry for targets'\n"
    )
    assert _imported(module, tmp_path) == {"pretrain", "finetune", "models", "space", "scoring", "report"}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_stage_imports_another_stage_and_no_shared_layer_imports_a_stage(path):
    layer = _layer(path)
    if layer in WIRING:
        return
    others = {s for s in STAGES if s != layer} & _imported(path)
    assert not others, (
        f"{path.relative_to(PACKAGE)} ({'stage ' + layer if layer in STAGES else 'shared layer ' + layer}) imports "
        f"{sorted(others)}; stages talk through the cards (hf_transfer_seg.cards.schema) and share models/, data/, "
        "hub/, baselines/ and the package root; wire stages together in cli/"
    )


def test_no_module_is_over_about_600_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if _layer(p) not in EXEMPT_FROM_SIZE and (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules by concern: {long}"
