"""Hostile entries in a dataset folder: file names that would forge store rows, and links that loop.

Each is refused while the folders are listed, before any metric runs, in one line that names the entry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_plan import _tree

from spips_bench.cli import main
from spips_bench.data.bapps import category_listing


def _run(root: Path, out: Path) -> int:
    return main(["run", "--metrics", "psnr", "--root", str(root), "--out", str(out), "--workers", "0",
                 "--bootstrap", "0", "--no-progress", "--kinds", "jnd", "--categories", "cnn"])


def _rename_all_parts(category: Path, old: str, new: str) -> None:
    for part in ("p0", "p1", "same"):
        src = next((category / part).glob(f"{old}.*"))
        src.rename(src.with_name(new + src.suffix))


@pytest.mark.parametrize("name", ["000003,0.0\n000002", "000004\u2028x", "000005\rx"])
def test_a_file_name_that_would_break_a_store_line_is_refused_by_name(
        name: str, demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(demo, tmp_path / "bapps", [("jnd", "cnn")])
    category = root / "jnd" / "val" / "cnn"
    first = sorted(p.stem for p in (category / "p0").iterdir())[0]
    _rename_all_parts(category, first, name)
    out = tmp_path / "run"
    assert _run(root, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot name a sample" in err[0] and ascii(name)[1:-1] in err[0]
    assert not (out / "summary.csv").exists()  # nothing was scored or reported


def test_a_name_with_a_comma_is_scored_and_reads_back(demo: Path, tmp_path: Path) -> None:
    root = _tree(demo, tmp_path / "bapps", [("jnd", "cnn")])
    category = root / "jnd" / "val" / "cnn"
    first = sorted(p.stem for p in (category / "p0").iterdir())[0]
    _rename_all_parts(category, first, "000000,0.0")
    out = tmp_path / "run"
    assert _run(root, out) == 0
    assert main(["tables", "--from", str(out)]) == 0
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["categories"] == {"jnd/cnn": 6}


@pytest.mark.parametrize("where", ["file", "part folder"])
def test_a_symbolic_link_loop_is_named_in_one_line(where: str, demo: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(demo, tmp_path / "bapps", [("jnd", "cnn")])
    category = root / "jnd" / "val" / "cnn"
    folder = category / "p0" if where == "file" else category
    os.symlink(folder / "loop-b", folder / "loop-a")
    os.symlink(folder / "loop-a", folder / "loop-b")
    assert _run(root, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loop-" in err[0] and "symbolic link" in err[0], err
    with pytest.raises(Exception, match="symbolic link"):
        category_listing(category)
