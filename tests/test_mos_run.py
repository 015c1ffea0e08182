"""`spips-bench run` on a MOS dataset: the store, summary.csv (kind mos, per distortion type and all), the
logistic fits in run.json, resuming, and the tables, checked against an independent SciPy computation.

The dataset here is a small plugin in a folder of its own (references, distorted images and one label
file), so these tests exercise the runner's MOS path whatever the built-in readers do.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import optimize, stats

from spips_bench.cli import main
from spips_bench.data import registry as data_registry
from spips_bench.data.images import read_image
from spips_bench.data.registry import Dataset
from spips_bench.report.build import write_reports
from spips_bench.run.config import RunConfig, dataset_defaults
from spips_bench.run.runner import run_benchmark
from spips_bench.stats.kinds import MOS, MOS_STATISTICS
from spips_bench.stats.summary import read_summary_csv


class _Reader(torch.utils.data.Dataset):
    """Distorted images ``dist/<ref>_<type>_<level>.png`` of one type, references ``ref/<ref>.png``,
    scores in ``scores.csv`` (``name,score``)."""

    kind = MOS
    image_parts = MOS.image_parts
    judgment_part = MOS.judgment_column

    def __init__(self, root: Path, category: str, load_size: int | None, **options: Any) -> None:
        self.folder = root
        self.load_size = load_size
        with open(root / "scores.csv", newline="") as f:
            scores = {row["name"]: float(row["score"]) for row in csv.DictReader(f)}
        self.scores = {n: s for n, s in scores.items() if n.split("_")[1] == category}
        self.names = sorted(self.scores)
        self.pairing_error = None
        self.cache_state = "off"

    def use_cache(self, **options: Any) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.names[i]
        files = {"dist": self.folder / "dist" / f"{name}.png", "ref": self.folder / "ref" / f"{name.split('_')[0]}.png"}
        item: dict[str, Any] = {part: torch.from_numpy(np.ascontiguousarray(
            read_image(path, self.load_size).array.transpose(2, 0, 1))) for part, path in files.items()}
        item.update(mos=torch.tensor(self.scores[name], dtype=torch.float32), name=name, conversions=[],
                    files={k: str(v) for k, v in files.items()})
        return item


class Tiny(Dataset):
    name = "tiny-mos"
    title = "Tiny MOS"
    synthetic = True
    kinds = ("mos",)
    splits = {"mos": ("all",)}  # noqa: RUF012

    def categories(self, root: Path, kind: str, split: str) -> list[str]:
        with open(Path(root) / "scores.csv", newline="") as f:
            return sorted({row["name"].split("_")[1] for row in csv.DictReader(f)})

    def present(self, root: Path, split: str) -> dict[str, list[str]]:
        return {"mos": self.categories(root, "mos", split)}

    def locate(self, root: Path | None) -> Path:
        assert root is not None and (root / "scores.csv").is_file()
        return root.resolve()

    def reader(self, root: Path, kind: str, split: str, category: str, load_size: int | None, **options: Any) -> Any:
        return _Reader(Path(root), category, load_size, **options)

    def listing(self, root: Path, kind: str, split: str, category: str) -> list[tuple[str, str]]:
        reader = _Reader(Path(root), category, None)
        return [(n, f"dist/{n}.png {(Path(root) / 'dist' / f'{n}.png').stat().st_size}") for n in reader.names]

    def category_title(self, code: str) -> str:
        return {"01": "01 noise", "02": "02 blur"}.get(code, code)


def _write(root: Path, refs: int = 4, levels: int = 5, seed: int = 0) -> dict[str, float]:
    """References cut from one photograph, noise (type 01) and blur (type 02) at ``levels`` strengths."""
    from PIL import ImageFilter
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    photo = skdata.astronaut()
    (root / "dist").mkdir(parents=True)
    (root / "ref").mkdir()
    scores: dict[str, float] = {}
    for r in range(refs):
        ref = photo[40 * r: 40 * r + 96, 50 * r: 50 * r + 80]
        Image.fromarray(ref).save(root / "ref" / f"R{r}.png")
        for level in range(1, levels + 1):
            noisy = np.clip(ref + rng.normal(scale=6.0 * level, size=ref.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / "dist" / f"R{r}_01_{level}.png")
            blurred = Image.fromarray(ref).filter(ImageFilter.GaussianBlur(0.6 * level))
            blurred.save(root / "dist" / f"R{r}_02_{level}.png")
            for t in ("01", "02"):
                scores[f"R{r}_{t}_{level}"] = round(5.0 - 0.7 * level + float(rng.normal(scale=0.3)), 4)
    with open(root / "scores.csv", "w", newline="") as f:
        f.write("name,score\n" + "".join(f"{n},{s}\n" for n, s in sorted(scores.items())))
    return scores


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, float]]:
    dataset = Tiny()
    monkeypatch.setitem(data_registry.REGISTRY._datasets, dataset.name, dataset)
    root = tmp_path / "data"
    return root, _write(root)


def _reference(quality: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    def f(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
        with np.errstate(over="ignore"):
            return b1 * (0.5 - 1.0 / (1.0 + np.exp(b2 * (x - b3)))) + b4 * x + b5

    # Least squares from a grid of starts on the raw scale; the line (b1 = 0) is a member of the family.
    slope, intercept = np.polyfit(quality, mos, 1)
    fitted = slope * quality + intercept
    for sign in (1.0, -1.0):
        for rate in (0.3, 1.0, 3.0, 10.0):
            for centre in np.quantile(quality, np.linspace(0.1, 0.9, 9)):
                p0 = [sign * float(np.ptp(mos)), rate / float(np.std(quality)), float(centre), 0.0, float(np.mean(mos))]
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optimize.OptimizeWarning)
                        popt, _ = optimize.curve_fit(f, quality, mos, p0=p0, maxfev=20_000)
                except RuntimeError:
                    continue
                if np.sum((f(quality, *popt) - mos) ** 2) < np.sum((fitted - mos) ** 2):
                    fitted = f(quality, *popt)
    linear = stats.pearsonr(quality, mos).statistic
    return {"srcc": stats.spearmanr(quality, mos).statistic, "krcc": stats.kendalltau(quality, mos).statistic,
            "plcc": stats.pearsonr(fitted, mos).statistic, "plcc_linear": linear,
            "rmse": float(np.sqrt(np.mean((fitted - mos) ** 2)))}


def test_a_mos_run_gives_the_statistics_an_independent_computation_gives(tiny, tmp_path: Path) -> None:
    root, scores = tiny
    out = tmp_path / "run"
    result = run_benchmark(RunConfig(metrics=["psnr", "ssim"], dataset="tiny-mos", split="all", root=root, out=out,
                                     load_size=None, bootstrap=50, workers=0, progress=False, batch_size=7))
    record = result.record
    assert record["status"] == "complete" and record["categories"] == {"mos/01": 20, "mos/02": 20}
    assert record["dataset"]["synthetic_judgments"] is True
    rows = read_summary_csv(out / "summary.csv")
    assert {r.kind for r in rows} == {"mos"} and {r.category for r in rows} == {"01", "02", "all"}
    with open(out / "scores" / "mos" / "01" / "psnr.csv", newline="") as f:
        stored = {row["sample"]: float(row["d"]) for row in csv.DictReader(f)}
    assert set(stored) == {n for n in scores if "_01_" in n}
    for metric, higher in (("psnr", True), ("ssim", True)):
        per_category = []
        for category in ("01", "02"):
            with open(out / "scores" / "mos" / category / f"{metric}.csv", newline="") as f:
                per_category += [(row["sample"], float(row["d"])) for row in csv.DictReader(f)]
        names = [n for n, _ in per_category]
        quality = np.array([d for _, d in per_category]) * (1 if higher else -1)
        mos = np.array([scores[n] for n in names])
        want = _reference(quality, mos)
        got = {r.statistic: r for r in rows if r.metric == metric and r.category == "all"}
        assert list(got) == list(MOS_STATISTICS)
        for name in MOS_STATISTICS:
            assert got[name].value == pytest.approx(want[name], abs=1e-3), (metric, name)
            assert got[name].n == 40
        fit = json.loads((out / "run.json").read_text())["logistic_fits"]["fits"][metric]["all"]
        assert set(fit) >= {"b1", "b2", "b3", "b4", "b5", "converged"}
    md = (out / "tables.md").read_text()
    assert "Tiny MOS all (synthetic judgments)" in md and "01 noise" in md and "SRCC per distortion type" in md
    assert "the lowest for RMSE" in md and "Images loaded at their stored size" in md


def test_a_mos_run_resumes_and_its_reports_rebuild_byte_for_byte(tiny, tmp_path: Path) -> None:
    root, _ = tiny
    out = tmp_path / "run"
    config = RunConfig(metrics=["psnr"], dataset="tiny-mos", split="all", root=root, out=out, load_size=None,
                       bootstrap=30, workers=0, progress=False, categories=["01"])
    run_benchmark(config)
    assert {r.category for r in read_summary_csv(out / "summary.csv")} == {"01"}  # one type: no "all" yet
    run_benchmark(RunConfig(**{**config.__dict__, "categories": None}))
    first = {p: (out / p).read_bytes() for p in ("summary.csv", "tables.md", "tables.tex")}
    assert {r.category for r in read_summary_csv(out / "summary.csv")} == {"01", "02", "all"}
    write_reports(out)
    assert {p: (out / p).read_bytes() for p in first} == first


def test_the_cli_takes_the_datasets_split_and_native_size_and_writes_the_overview(tiny, tmp_path: Path,
                                                                                 capsys) -> None:
    root, _ = tiny
    assert dataset_defaults("tiny-mos") == ("all", None)
    assert dataset_defaults("bapps") == ("val", 64) and dataset_defaults("demo") == ("val", 64)
    out = tmp_path / "cli-run"
    assert main(["run", "--metrics", "psnr", "--dataset", "tiny-mos", "--root", str(root), "--out", str(out),
                 "--bootstrap", "20", "--workers", "0", "--no-progress"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["arguments"]["split"] == "all" and record["arguments"]["load_size"] is None
    capsys.readouterr()
    assert main(["tables", "--mos", str(out), "--out", str(tmp_path / "overview")]) == 0
    md = (tmp_path / "overview" / "mos-tables.md").read_text()
    assert "| Metric | Tiny MOS all (synthetic judgments) |" in md and "| psnr ↑ |" in md
    assert md.count("metrics x datasets") == 3 and (tmp_path / "overview" / "mos-tables.tex").is_file()
    assert main(["tables", "--mos", str(out)]) == 2  # --out is needed: a one-line error
    assert "--out DIR" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["tid2013", "kadid10k", "pipal"])
def test_a_run_on_each_official_layout_matches_scipy_on_its_scores(layout: str, tmp_path: Path) -> None:
    from spips_bench.data.mos_demo import write_mos_layout

    root = tmp_path / layout
    truth = write_mos_layout(root, layout, references=4, types=3, levels=5, size=(48, 40), seed=3)
    out = tmp_path / "run"
    split = "train" if layout == "pipal" else "all"
    run_benchmark(RunConfig(metrics=["psnr", "ssim"], dataset=layout, split=split, root=root, out=out,
                            load_size=None, bootstrap=0, workers=0, progress=False))
    rows = {(r.metric, r.category, r.statistic): r.value for r in read_summary_csv(out / "summary.csv")}
    record = json.loads((out / "run.json").read_text())
    assert sorted(record["categories"].values()) == [20, 20, 20]
    for metric in ("psnr", "ssim"):
        stored: dict[str, float] = {}
        for category_file in sorted((out / "scores" / "mos").glob(f"*/{metric}.csv")):
            with open(category_file, newline="") as f:
                stored.update({row["sample"]: float(row["d"]) for row in csv.DictReader(f)})
        assert set(stored) == set(truth)  # every distorted image scored once, by its label-file name
        names = sorted(stored)
        quality, mos = np.array([stored[n] for n in names]), np.array([truth[n] for n in names])
        want = _reference(quality, mos)
        for name in ("srcc", "krcc", "plcc", "plcc_linear", "rmse"):
            assert rows[(metric, "all", name)] == pytest.approx(want[name], abs=1e-3), (layout, metric, name)


def test_a_corrupt_image_is_named_or_skipped_and_the_rest_is_kept(tmp_path: Path) -> None:
    from spips_bench.data.mos_demo import write_mos_layout
    from spips_bench.errors import ImageReadError

    root = tmp_path / "kadid"
    truth = write_mos_layout(root, "kadid10k", references=2, types=2, levels=3, size=(48, 40), seed=1)
    bad = sorted(truth)[1]
    (root / "images" / f"{bad}.png").write_bytes(b"not a png")
    config = RunConfig(metrics=["psnr"], dataset="kadid10k", split="all", root=root, out=tmp_path / "run",
                       load_size=None, bootstrap=0, workers=0, progress=False)
    with pytest.raises(ImageReadError, match=rf"{bad}\.png.*--on-error skip"):
        run_benchmark(config)
    result = run_benchmark(RunConfig(**{**config.__dict__, "on_error": "skip"}))
    assert [e["sample"] for e in result.record["skipped"]] == [bad]
    assert bad in result.record["skipped"][0]["file"]
    rows = read_summary_csv(tmp_path / "run" / "summary.csv")
    assert {r.n for r in rows if r.category == "all" and r.statistic == "srcc"} == {len(truth) - 1}
