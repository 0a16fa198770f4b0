"""No import circles in masksep/: a module never imports the one that imports it.

The graph holds what runs when a module is imported: its module-level imports,
also those inside top-level ``try``/``if`` blocks and class bodies. Imports
inside functions run later, when the function is called, so they are left
out, as are ``if TYPE_CHECKING:`` blocks (never run). Importing ``a.b.c`` also
runs the ``__init__`` of each package on the way, unless the importer sits
inside that package already (then it has run).
"""

from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "masksep"


def module_files(package: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_at_import(body: list[ast.stmt]):
    """The import statements of ``body`` that run when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _run_at_import(node.body)
            yield from _run_at_import(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _run_at_import(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _run_at_import(node.body)
        # FunctionDef / AsyncFunctionDef: their imports run when called.


def _targets(name: str, node: ast.stmt, modules: dict[str, Path]) -> set[str]:
    """The masksep modules that ``node`` in module ``name`` makes run."""
    is_package = modules[name].name == "__init__.py"
    if isinstance(node, ast.Import):
        wanted = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importer's package
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        # `from pkg import x` imports pkg.x when x is a module, else takes an attribute.
        wanted = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    own = name.split(".")
    out = set()
    for target in wanted:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            step = ".".join(parts[:i])
            # Packages around the importer have run already; the target itself always runs.
            if step in modules and step != name and (own[:i] != parts[:i] or i == len(parts)):
                out.add(step)
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(package)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set()
        for node in _run_at_import(tree.body):
            graph[name] |= _targets(name, node, modules)
    return graph


def test_the_graph_sees_the_imports_that_run():
    graph = import_graph()
    # a module-level import, and the registries that masksep.config reads
    assert "masksep.errors" in graph["masksep.config"]
    assert "masksep.models" in graph["masksep.config"]
    # `if TYPE_CHECKING:` is left out: the models do not import the config at run time
    assert "masksep.config" not in graph["masksep.models.heads"]
    # the package itself is not an import of its own submodule
    assert "masksep.models" not in graph["masksep.models.separator"]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_package_init(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n"
                "def f():\n    from pkg import b\n",
        "b.py": "from pkg.a import f\n",
        "sub/__init__.py": "from pkg.sub import leaf\n",
        "sub/leaf.py": "from . import other\n",
        "sub/other.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.a"] == set()
    assert graph["pkg.sub.leaf"] == {"pkg.sub.other"}
    assert find_cycle(graph) is None
    # a.py imports pkg.sub.leaf, whose package __init__ imports leaf: no cycle;
    # leaf importing pkg.a back at module level is one.
    (pkg / "a.py").write_text("import pkg.sub.leaf\n")
    (pkg / "sub" / "other.py").write_text("try:\n    from pkg import a\nexcept ImportError:\n    pass\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.leaf"}
    cycle = find_cycle(graph)
    assert cycle is not None and "pkg.a" in cycle and "pkg.sub.other" in cycle


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_loading_a_config_or_a_study_design_does_not_import_torch():
    probe = ("import sys, json, masksep.config as C, masksep.design as D;"
             "C.load_config('sweeps/trials/study-tcn.yaml', ['head.kind=og', 'head.grouping=oracle']);"
             "C.load_config('sweeps/trials/dprnn-paper.yaml');"
             "D.read_design(json.load(open('results/study/study.json'))['study'], 'study.json');"
             "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    root = PACKAGE.parent
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-800:]


def test_the_registries_build_exactly_the_names_the_config_accepts():
    from masksep.models import (
        BACKBONES,
        ENCODERS,
        HEAD_LAYOUTS,
        HEADS,
        HIDDEN_ACTIVATIONS,
        MASK_ACTIVATIONS,
        spec,
    )
    from masksep.models.registry import Registry

    assert ENCODERS.names() == spec.ENCODER_KINDS and BACKBONES.names() == spec.BACKBONE_KINDS
    assert HEADS.names() == spec.HEAD_KINDS and HIDDEN_ACTIVATIONS.names() == spec.HIDDEN_ACTS
    assert MASK_ACTIVATIONS.names() == spec.MASK_ACTS and HEAD_LAYOUTS.names() == spec.HEAD_LAYOUTS
    with pytest.raises(RuntimeError, match="head.kind"):
        Registry("head.kind", {"shallow": object()}, names=spec.HEAD_KINDS)
    # the data readers, registered the same way, against masksep/data/spec.py
    from masksep.data import DATASETS
    from masksep.data import spec as data_spec

    assert DATASETS.names() == data_spec.DATA_KINDS
    with pytest.raises(RuntimeError, match=r"data\.kind: .* \(masksep/data/spec\.py\)"):
        Registry("data.kind", {"synthetic": object()}, names=data_spec.DATA_KINDS,
                 spec="masksep/data/spec.py")

