"""The package layout: no import cycle between modules, a small top level, one atomic writer."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import spips_bench
from spips_bench import io
from spips_bench.errors import StoreWriteError

PACKAGE = Path(spips_bench.__file__).parent
#: The most modules the top level of the package may hold; everything else lives in a sub-package.
MAX_TOP_LEVEL = 10


def _modules(package: Path) -> dict[str, tuple[Path, list[str]]]:
    """Every module of ``package``: dotted name -> (file, the dotted parts of the package it is in)."""
    found: dict[str, tuple[Path, list[str]]] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            found[".".join(parts)] = (path, parts)
        else:
            found[".".join(parts)] = (path, parts[:-1])
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at any depth (function-level and TYPE_CHECKING too).

    ``from a import b`` counts as importing the module ``a.b`` when there is one, else ``a``.
    """
    modules = _modules(package)
    graph: dict[str, set[str]] = {}
    for name, (path, pkg) in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg[: len(pkg) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                subs = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in modules]
                targets.update(subs)
                if len(subs) < len(node.names):
                    targets.add(module)
        resolved = set()
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                resolved.add(target)
        graph[name] = resolved
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module (each one a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\nx = 1\n")
    (pkg / "d.py").write_text("from pkg import c\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.c"}
    assert import_cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_no_two_modules_import_each_other() -> None:
    graph = import_graph(PACKAGE)
    assert "spips_bench.run.runner" in graph and "spips_bench.run.store" in graph["spips_bench.run.runner"]
    assert import_cycles(graph) == []


def test_the_top_level_holds_at_most_ten_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


# -- the one atomic writer --------------------------------------------------------------------------


def test_atomic_path_replaces_the_file_only_when_the_writer_finishes(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "figure.png"
    with io.atomic_path(target, suffix=io.TEMP_SUFFIX + ".png") as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".tmp.png") and not target.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["figure.png"]
    with pytest.raises(RuntimeError, match="writer died"), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["figure.png"]


def test_atomic_writes_keep_the_umask_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        io.atomic_write_text(tmp_path / "a.txt", "x\n")
        io.atomic_write_bytes(tmp_path / "b.bin", b"\0")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").read_bytes() == b"x\n" and (tmp_path / "b.bin").read_bytes() == b"\0"
    assert {(tmp_path / n).stat().st_mode & 0o777 for n in ("a.txt", "b.bin")} == {0o644}


def test_a_failed_write_names_the_file_or_passes_the_system_error_through(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreWriteError, match=r"file/x\.txt: cannot write"):
        io.atomic_write_text(blocker / "x.txt", "x")
    with pytest.raises(OSError) as info:
        io.atomic_write_text(blocker / "x.txt", "x", error=None)
    assert not isinstance(info.value, StoreWriteError)


def test_only_folder_moves_rename_outside_io() -> None:
    """Every file written whole goes through :mod:`spips_bench.io`; the only direct ``os.replace`` calls left
    move an extracted archive's folders or set a rejected download aside (the generated demo sets move
    into place with ``io.replace_durably``)."""
    callers = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.replace":
                callers.add(path.relative_to(PACKAGE).as_posix())
    assert callers == {"io.py", "data/download.py"}


#: The packages of the harness: they run, score, tabulate and measure metrics, and name none of them.
#: What they need to know of a metric is its card (``spips_bench/cards``) or the benchmark's plan
#: (``spips_bench/perf/targets.toml``).
HARNESS = ("run", "stats", "report", "perf", "cli", "integrations", "data")


def metric_name_literals(files: list[Path], names: set[str]) -> list[str]:
    """``file:line: 'literal'`` for every string literal, docstrings aside, that spells one of ``names``
    (compared as the registry compares names: case-insensitive, ``_`` as ``-``)."""
    found = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and node.value.strip().lower().replace("_", "-") in names):
                shown = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path
                found.append(f"{shown}:{node.lineno}: {node.value!r}")
    return found


def _builtin_names() -> set[str]:
    from spips_bench.registry import load_cards

    return {n.lower() for spec in load_cards() for n in (spec.name, *spec.aliases)}


def test_the_name_finder_finds_a_comparison_and_skips_docstrings(tmp_path: Path) -> None:
    module = tmp_path / "routing.py"
    module.write_text('"""Routes ``lpips`` to its peer."""\n\n\ndef peers(name):\n'
                      '    """For "lpips" only."""\n    return ["x"] if name == "LPIPS" else []\n', encoding="utf-8")
    found = metric_name_literals([module], {"lpips"})
    assert len(found) == 1 and found[0].endswith(":6: 'LPIPS'")


def test_the_harness_names_no_metric() -> None:
    names = _builtin_names()
    assert {"lpips", "ssim", "spips", "stlpips-alex"} <= names
    files = [p for sub in HARNESS for p in sorted((PACKAGE / sub).rglob("*.py"))]
    assert len(files) > 20
    found = metric_name_literals(files, names)
    assert not found, ("harness code spells metric names; take them from the card (MetricSpec) or from "
                       "perf/targets.toml instead:\n" + "\n".join(found))


def test_the_spips_commands_take_their_default_metric_from_the_zoo_and_training() -> None:
    # explain and train leave --metric unset; the default is the zoo's (explain) or TrainConfig's (train)
    from spips_bench.cli import build_parser
    from spips_bench.cli.explain import _require_spips
    from spips_bench.training.lpips_protocol import TrainConfig
    from spips_bench.zoo.spips.explain import DEFAULT_METRIC

    parser = build_parser()
    assert parser.parse_args(["explain", "r.png", "a.png", "--out", "f.png"]).metric is None
    assert parser.parse_args(["train", "--out", "o"]).metric is None
    _require_spips(DEFAULT_METRIC)  # a SPIPS variant: explain can draw it
    assert TrainConfig.metric == DEFAULT_METRIC
