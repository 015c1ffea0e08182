"""A plugin package, installed with pip, extends spips-bench without any edit to it.

The package is written here: a ``pyproject.toml`` that declares a metric under the entry-point group
``spips_bench.metrics`` and one module with the metric class. pip builds it offline (setuptools, no
build isolation, no index) into a folder that goes on ``PYTHONPATH``; then ``python -m spips_bench list``
and ``run`` see the metric as they see a built-in one, and the contract checks of
``tests/test_contract.py`` hold for it.
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

[tool.setuptools]
py-modules = ["{MODULE}"]
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

# Datasets plug in through the entry-point group `spips_bench.datasets` once spips_bench.data has a
# dataset type and registry: the package above then gains a `[project.entry-points."spips_bench.datasets"]`
# table and a dataset module (a few triplets written under tmp_path), and test_plugin_runs_end_to_end
# passes `--dataset` that dataset's name.


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
