"""A plugin package, installed with pip, extends spips-bench without any edit to it.

The package is written here: a ``pyproject.toml`` that declares a metric under the entry-point group
``spips_bench.metrics`` and a dataset under ``spips_bench.datasets``, one module with the metric class
and one with the dataset class (a few 2AFC triplets drawn with numpy, categories of its own, synthetic
judgments). pip builds it offline (setuptools, no build isolation, no index) into a folder that goes on
``PYTHONPATH``; then ``python -m spips_bench list`` and ``run`` see the metric and the dataset as they
see built-in ones, and the contract checks of ``tests/test_contract.py`` hold for the metric.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_contract import CHECKS, Subject

from spips_bench.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "spips-toy-plugin"
MODULE = "spips_toy_plugin"
METRIC = "toy-blur-l1"
DATA_MODULE = "spips_toy_data"
DATASET = "toy-shapes"
TITLE = "Toy shapes"
CATEGORIES = ("checks", "stripes")
TRIPLETS = 6

PYPROJECT = f"""\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{DISTRIBUTION}"
version = "1.0"
description = "A metric for spips-bench, delivered as a plugin"
requires-python = ">=3.11"

[project.entry-points."spips_bench.metrics"]
{METRIC} = "{MODULE}:BlurL1"

[project.entry-points."spips_bench.datasets"]
{DATASET} = "{DATA_MODULE}:ToyShapes"

[tool.setuptools]
py-modules = ["{MODULE}", "{DATA_MODULE}"]
"""

# A convolution with a buffer, so that device and dtype moves and autocast have something to act on.
SOURCE = f'''\
"""Mean absolute difference of box-blurred images, as a spips-bench plugin metric."""

import torch

from spips_bench.metric import Metric


class BlurL1(Metric):
    """Mean absolute difference of 3x3 box-blurred images."""

    name = "{METRIC}"
    higher_is_better = False
    min_size = 3
    symmetric = True
    differentiable = True
    citation = "none"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.full((3, 1, 3, 3), 1.0 / 9.0))

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        blurred = torch.nn.functional.conv2d(dist - ref, self.kernel, groups=3)
        return blurred.abs().flatten(1).mean(1).to(dist.dtype)
'''

# A 2AFC dataset in the paired-folder layout with categories of its own. `locate` writes the triplets
# into an empty root, so `run --dataset toy-shapes --root DIR` works on a fresh folder.
DATA_SOURCE = f'''\
"""Striped and checkered patches with simulated 2AFC judgments, as a spips-bench plugin dataset."""

from pathlib import Path

import numpy as np
from PIL import Image

from spips_bench.data.registry import Dataset

CATEGORIES = {CATEGORIES!r}
TRIPLETS = {TRIPLETS}


def _pattern(category, rng):
    y, x = np.mgrid[0:32, 0:32]
    period = int(rng.integers(3, 8))
    base = (x // period) % 2 if category == "stripes" else ((x // period) + (y // period)) % 2
    return np.repeat(base[..., None].astype(np.float64), 3, axis=2)


def write_triplets(root):
    """Write TRIPLETS triplets per category under root/2afc/val (noise of two strengths on one pattern)."""
    for category in CATEGORIES:
        folder = Path(root) / "2afc" / "val" / category
        for part in ("ref", "p0", "p1", "judge"):
            (folder / part).mkdir(parents=True, exist_ok=True)
        for i in range(TRIPLETS):
            rng = np.random.default_rng([CATEGORIES.index(category), i])
            ref = _pattern(category, rng)
            s0, s1 = rng.uniform(0.02, 0.4, size=2)
            for part, strength in (("p0", s0), ("p1", s1)):
                noisy = np.clip(ref + rng.normal(0.0, strength, ref.shape), 0.0, 1.0)
                Image.fromarray((noisy * 255).round().astype(np.uint8)).save(folder / part / f"{{i:03d}}.png")
            Image.fromarray((ref * 255).astype(np.uint8)).save(folder / "ref" / f"{{i:03d}}.png")
            # The fraction of five simulated raters who prefer p1: more of them when p1 is less noisy.
            votes = rng.binomial(5, 1.0 / (1.0 + np.exp(8.0 * (s1 - s0))))
            np.save(folder / "judge" / f"{{i:03d}}.npy", np.array([votes / 5.0], dtype=np.float32))


class ToyShapes(Dataset):
    """Striped and checkered 32 px patches with noise, judged by simulated raters."""

    name = "{DATASET}"
    title = "{TITLE}"
    synthetic = True
    kinds = ("2afc",)
    splits = {{"2afc": ("val",)}}
    description = "striped and checkered patches, simulated raters"
    citation = "none"

    def locate(self, root):
        base = Path(root) if root is not None else self.default_root()
        if not (base / "2afc").exists():
            write_triplets(base)
        return super().locate(base)
'''


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder that pip installed the plugin package into (module scope: installed once)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the plugin package offline needs setuptools in the test environment: "
                    "`pip install setuptools`")
    base = tmp_path_factory.mktemp("plugin")
    src = base / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (src / f"{MODULE}.py").write_text(SOURCE, encoding="utf-8")
    (src / f"{DATA_MODULE}.py").write_text(DATA_SOURCE, encoding="utf-8")
    target = base / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    assert (target / f"{MODULE}.py").is_file()
    return target


def _cli(installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(installed), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "SPIPS_BENCH_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "spips_bench", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    return proc


def test_pip_installed_the_entry_point(installed: Path) -> None:
    infos = list(installed.glob("*.dist-info"))
    assert len(infos) == 1 and _normalized(infos[0].name).startswith(DISTRIBUTION), infos
    entry_points = (infos[0] / "entry_points.txt").read_text(encoding="utf-8")
    assert "[spips_bench.metrics]" in entry_points and f"{MODULE}:BlurL1" in entry_points
    assert "[spips_bench.datasets]" in entry_points and f"{DATA_MODULE}:ToyShapes" in entry_points


def test_plugin_is_listed(installed: Path) -> None:
    lines = _cli(installed, "list").stdout.splitlines()
    row = next((line for line in lines if line.split()[:1] == [METRIC]), None)
    assert row is not None, "\n".join(lines)
    assert row.split()[1] == "lower"
    psnr = next(line for line in lines if line.split()[:1] == ["psnr"])
    assert psnr.split()[1] == "higher"  # the built-ins are still there
    records = {r["name"]: r for r in json.loads(_cli(installed, "list", "--format", "json").stdout)}
    record = records[METRIC]
    assert _normalized(record["source"]) == DISTRIBUTION
    assert record["direction"] == "lower" and record["symmetric"] is True and record["min_size"] == 3
    assert record["description"] == "Mean absolute difference of 3x3 box-blurred images."
    assert records["psnr"]["source"] == "builtin"


def test_plugin_runs_end_to_end(installed: Path, demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _cli(installed, "run", "--metrics", f"{METRIC},psnr", "--dataset", "demo", "--categories", "cnn",
         "--out", str(out), "--bootstrap", "0", "--workers", "0", "--device", "cpu", "--no-progress")
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "complete"
    assert list(record["metrics"]) == [METRIC, "psnr"]
    mine = record["metrics"][METRIC]
    assert mine["target"] == f"{MODULE}:BlurL1" and mine["status"] == "ok"
    assert mine["higher_is_better"] is False
    assert sorted(mine["scored"]) == ["2afc/cnn", "jnd/cnn"]

    tables = (out / "tables.md").read_text(encoding="utf-8")
    rows = [line for line in tables.splitlines() if line.startswith(f"| {METRIC} ")]
    assert rows and all("↓" in row for row in rows), tables  # the plugin's direction, read from its class
    assert any(line.startswith("| psnr ") for line in tables.splitlines())

    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        summary = [row for row in csv.DictReader(f) if row["metric"] == METRIC]
    kinds = {row["kind"] for row in summary}
    assert kinds == {"2afc", "jnd"}, summary
    score = next(row for row in summary if row["kind"] == "2afc" and row["statistic"] == "2afc_score")
    assert 0.0 <= float(score["value"]) <= 1.0 and int(score["n"]) > 0
    assert all(math.isfinite(float(row["value"])) for row in summary), summary


def test_plugin_dataset_is_listed(installed: Path) -> None:
    lines = _cli(installed, "list", "--datasets").stdout.splitlines()
    row = next((line for line in lines if line.split()[:1] == [DATASET]), None)
    assert row is not None, "\n".join(lines)
    assert "synthetic" in row.split() and any(line.split()[:1] == ["bapps"] for line in lines)
    records = {r["name"]: r for r in json.loads(_cli(installed, "list", "--datasets", "--format", "json").stdout)}
    assert _normalized(str(records[DATASET]["source"])) == DISTRIBUTION
    assert records[DATASET]["kinds"] == ["2afc"] and records[DATASET]["synthetic"] is True
    assert records["bapps"]["source"] == "builtin" and records["demo"]["synthetic"] is True


def test_plugin_dataset_runs_end_to_end(installed: Path, tmp_path: Path) -> None:
    root, out = tmp_path / "toy", tmp_path / "run"
    _cli(installed, "run", "--metrics", f"{METRIC},psnr", "--dataset", DATASET, "--root", str(root),
         "--out", str(out), "--bootstrap", "0", "--workers", "0", "--device", "cpu", "--no-progress")
    assert sorted(p.name for p in (root / "2afc" / "val").iterdir()) == sorted(CATEGORIES)  # its locate wrote them
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "complete"
    dataset = record["dataset"]
    assert dataset["name"] == DATASET and dataset["synthetic_judgments"] is True
    assert _normalized(dataset["source"]) == DISTRIBUTION and dataset["absent"] == []
    assert dataset["title"] == f"{TITLE} val (synthetic judgments)"
    assert record["categories"] == {f"2afc/{c}": TRIPLETS for c in CATEGORIES}
    for metric in (METRIC, "psnr"):
        assert record["metrics"][metric]["scored"] == [f"2afc/{c}" for c in CATEGORIES]

    tables = (out / "tables.md").read_text(encoding="utf-8")
    assert f"{TITLE} val (synthetic judgments)" in tables.splitlines()[0], tables
    header = next(line for line in tables.splitlines() if line.startswith("| metric") or line.startswith("| Metric"))
    assert all(c in header for c in CATEGORIES), header
    assert "traditional" not in tables and "cnn" not in tables.lower()  # no BAPPS category

    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        summary = list(csv.DictReader(f))
    assert {row["metric"] for row in summary} == {METRIC, "psnr"}
    assert {row["kind"] for row in summary} == {"2afc"}
    assert {row["category"] for row in summary} == set(CATEGORIES)
    for metric in (METRIC, "psnr"):
        for category in CATEGORIES:
            score = next(row for row in summary if row["metric"] == metric and row["category"] == category
                         and row["statistic"] == "2afc_score")
            assert 0.0 <= float(score["value"]) <= 1.0 and int(score["n"]) == TRIPLETS


@pytest.fixture
def plugin(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Subject]:
    """The plugin's metric, found through its entry point by a fresh registry in this process."""
    monkeypatch.syspath_prepend(str(installed))
    registry = Registry()
    spec = registry.get(METRIC)
    assert _normalized(spec.source) == DISTRIBUTION and spec.target == f"{MODULE}:BlurL1"
    assert spec.differentiable and spec.symmetric and not spec.higher_is_better
    yield Subject(spec, lambda: registry.create(METRIC))
    sys.modules.pop(MODULE, None)


@pytest.mark.parametrize("check", list(CHECKS))
def test_plugin_meets_the_contract(plugin: Subject, check: str) -> None:
    CHECKS[check](plugin)
