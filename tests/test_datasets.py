"""The dataset type and registry: cards, plugins that fail, plans and readers of a set that is not BAPPS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spips_bench.data import registry as data_registry
from spips_bench.data.bapps import JND_CATEGORIES, TWO_AFC_CATEGORIES, TwoAFCDataset
from spips_bench.data.demo import JND_SIZES, TWO_AFC_SIZES
from spips_bench.data.registry import Dataset, DatasetRegistry, get_dataset
from spips_bench.errors import DatasetError
from spips_bench.report.build import report_title
from spips_bench.run.config import RunConfig
from spips_bench.run.plan import resolve_plan


class Shapes(Dataset):
    """A 2AFC set with categories of its own."""

    name = "shapes"
    title = "Shapes"
    synthetic = True
    kinds = ("2afc",)


def _write(root: Path, categories: dict[str, int], size: int = 8) -> Path:
    """``n`` triplets per category under ``root/2afc/val``, judgments ``i / n``."""
    rng = np.random.default_rng(0)
    for category, n in categories.items():
        for part in ("ref", "p0", "p1", "judge"):
            (root / "2afc" / "val" / category / part).mkdir(parents=True)
        for i in range(n):
            for part in ("ref", "p0", "p1"):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "2afc" / "val" / category / part / f"{i:02d}.png")
            np.save(root / "2afc" / "val" / category / "judge" / f"{i:02d}.npy", np.float32(i / n))
    return root


class _EntryPoint:
    def __init__(self, name: str, load: Any) -> None:
        self.name = name
        self._load = load
        self.dist = type("Dist", (), {"name": "some-plugin"})()

    def load(self) -> Any:
        return self._load()


def test_cards_are_read_without_torch() -> None:
    code = ("import sys; from spips_bench.data.registry import get_dataset, dataset_names; "
            "b = get_dataset('bapps'); d = get_dataset('demo'); "
            "print(dataset_names()[:2], b.kinds_of('train'), d.synthetic, b.citation[:5]); "
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "['bapps', 'demo'] ['2afc'] True Zhang"


def test_the_cards_hold_the_categories_the_readers_and_the_demo_set_use() -> None:
    for name in ("bapps", "demo"):
        ds = get_dataset(name)
        assert ds.categories(Path("/nonexistent"), "2afc", "val") == list(TWO_AFC_CATEGORIES["val"])
        assert ds.categories(Path("/nonexistent"), "2afc", "train") == list(TWO_AFC_CATEGORIES["train"])
        assert ds.categories(Path("/nonexistent"), "jnd", "val") == list(JND_CATEGORIES)
        assert ds.kinds_of("val") == ["2afc", "jnd"] and ds.kinds_of("train") == ["2afc"]
    assert {s: list(c) for s, c in TWO_AFC_SIZES.items()} == {s: list(c) for s, c in TWO_AFC_CATEGORIES.items()}
    assert tuple(JND_SIZES) == JND_CATEGORIES
    assert not get_dataset("bapps").synthetic and get_dataset("demo").synthetic


@pytest.mark.parametrize("case", ["raises", "not-a-dataset", "name-taken", "bad-kind"])
def test_a_broken_dataset_plugin_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    def raises() -> Any:
        raise ImportError("No module named 'missing_dep'")

    class Taken(Shapes):
        name = "bapps"

    class BadKind(Shapes):
        name = "ratings-set"
        kinds = ("ratings",)

    load = {"raises": raises, "not-a-dataset": lambda: 42, "name-taken": lambda: Taken,
            "bad-kind": lambda: BadKind}[case]
    eps = [_EntryPoint("broken", load), _EntryPoint("shapes", lambda: Shapes)]
    monkeypatch.setattr(data_registry, "entry_points", lambda group: eps if group == "spips_bench.datasets" else [])
    reg = DatasetRegistry()
    # the good plugin and the built-ins are there: BAPPS, its demo set, the MOS sets and their demo set
    assert reg.names() == ["bapps", "demo", "tid2013", "kadid10k", "pipal", "mos-demo", "shapes"]
    assert reg.get("shapes").source == "some-plugin" and reg.get("bapps").source == "builtin"
    error = reg.plugin_errors["broken"]
    assert error.startswith("some-plugin: ")
    assert {"raises": "missing_dep", "not-a-dataset": "expected a spips_bench.data.registry.Dataset",
            "name-taken": "already taken by builtin", "bad-kind": "kinds must be among 2afc, jnd, mos"}[case] in error
    with pytest.raises(ValueError, match=r"unknown dataset 'broken'.*Plugin 'broken' was not loaded"):
        reg.get("broken")


def test_an_unknown_dataset_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'bapp'; choose 'auto' or one of bapps, demo.*"
                                         r"Did you mean 'bapps'\?"):
        RunConfig(metrics=["psnr"], dataset="bapp")
    assert RunConfig(metrics=["psnr"], dataset="Demo").dataset == "demo"


@pytest.fixture
def shapes(monkeypatch: pytest.MonkeyPatch) -> Dataset:
    """``Shapes`` registered in the process-wide registry for one test."""
    dataset = Shapes()
    monkeypatch.setitem(data_registry.REGISTRY._datasets, dataset.name, dataset)
    return dataset


def test_a_plugin_plan_is_its_own_categories_on_disk(tmp_path: Path, shapes: Dataset) -> None:
    root = _write(tmp_path / "s", {"squares": 2, "circles": 3})
    assert resolve_plan(RunConfig(metrics=["psnr"], dataset="shapes"), root) == [("2afc", "circles"),
                                                                                 ("2afc", "squares")]
    only = RunConfig(metrics=["psnr"], dataset="shapes", categories=["squares"])
    assert resolve_plan(only, root) == [("2afc", "squares")]
    with pytest.raises(ValueError, match=r"no category 'square'; choose from circles, squares\. Did you mean "
                                         r"'squares'\?"):
        resolve_plan(RunConfig(metrics=["psnr"], dataset="shapes", categories=["square"]), root)
    with pytest.raises(ValueError, match="has no jnd judgments for split 'val'; choose from 2afc"):
        resolve_plan(RunConfig(metrics=["psnr"], dataset="shapes", kinds=["jnd"]), root)
    with pytest.raises(ValueError, match="has no split 'train'; its splits: val"):
        resolve_plan(RunConfig(metrics=["psnr"], dataset="shapes", split="train"), root)


def test_a_plugin_root_without_its_data_is_named(tmp_path: Path, shapes: Dataset) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: no Shapes data here \(looked for .*empty/2afc/val/<category>\)"):
        shapes.locate(tmp_path / "empty")
    assert shapes.locate(_write(tmp_path / "full", {"squares": 1})) == (tmp_path / "full").resolve()


def test_the_reader_takes_categories_that_are_not_bappss(tmp_path: Path, shapes: Dataset) -> None:
    root = _write(tmp_path / "s", {"squares": 3})
    reader = shapes.reader(root, "2afc", "val", "squares", 8)
    assert len(reader) == 3 and reader[2]["judge"].item() == pytest.approx(2 / 3, abs=1e-6)
    assert tuple(reader[0]["ref"].shape) == (3, 8, 8)
    with pytest.raises(ValueError, match="BAPPS 2afc val has no category 'squares'"):
        TwoAFCDataset(root, "val", "squares", 8)  # without the dataset's names the readers are BAPPS's
    with pytest.raises(ValueError, match=r"Shapes 2afc val has no category 'square';.*Did you mean 'squares'"):
        shapes.reader(root, "2afc", "val", "square", 8)
    with pytest.raises(ValueError, match="dataset 'shapes' has no jnd judgments; it has 2afc"):
        shapes.reader(root, "jnd", "val", "squares", 8)


def test_the_report_title_is_the_recorded_one_and_old_records_keep_theirs() -> None:
    assert Shapes().report_title("val") == "Shapes val (synthetic judgments)"
    assert report_title({"dataset": {"name": "shapes", "title": "Shapes val (synthetic judgments)"}}) == \
        "Shapes val (synthetic judgments)"
    assert report_title({"dataset": {"name": "bapps", "split": "val"}}) == "BAPPS val"
    assert report_title({"dataset": {"name": "demo", "split": "val", "synthetic_judgments": True,
                                     "label": "synthetic judgments"}}) == "Demo set (synthetic judgments)"
    assert get_dataset("bapps").report_title("val") == "BAPPS val"
    assert get_dataset("demo").report_title("val") == "Demo set (synthetic judgments)"


def test_presence_is_per_kind_of_the_split(tmp_path: Path, shapes: Dataset) -> None:
    root = _write(tmp_path / "s", {"squares": 1, "circles": 1})
    assert shapes.present(root, "val") == {"2afc": ["circles", "squares"]}
    assert shapes.present(root, "train") == {}
    (root / "jnd" / "val" / "cnn").mkdir(parents=True)  # BAPPS's names count for BAPPS only
    assert get_dataset("bapps").present(root, "val") == {"2afc": [], "jnd": ["cnn"]}


def test_a_plugin_split_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Held(Shapes):
        name = "held"
        splits = MappingProxyType({"2afc": ("test",)})

    monkeypatch.setitem(data_registry.REGISTRY._datasets, "held", Held())
    root = _write(tmp_path / "h", {"squares": 1})
    (root / "2afc" / "val").rename(root / "2afc" / "test")
    assert resolve_plan(RunConfig(metrics=["psnr"], dataset="held", split="test"), root) == [("2afc", "squares")]
    with pytest.raises(ValueError, match="has no split 'val'; its splits: test"):
        resolve_plan(RunConfig(metrics=["psnr"], dataset="held"), root)
