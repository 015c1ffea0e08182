"""Infinite and NaN scores in a run: PSNR of identical images is +inf, an ordered value as in the official
LPIPS evaluation; a NaN score is left out; a (metric, category) without one usable score is footnoted.

The runs score PSNR on a BAPPS-layout copy of the demo set in which some pairs are made identical, and
the expected 2AFC score and JND mAP are the official formulas applied by hand to the stored scores.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from spips_bench import registry
from spips_bench.cli import main
from spips_bench.metric import Metric
from spips_bench.run.store import read_table

N = 20  # samples per category
IDENTICAL = (0, 5, 10, 15)  # the samples made identical: 2AFC p0 := ref, JND p1 := p0


@pytest.fixture
def identical(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path) -> Path:
    """A BAPPS root (2AFC and JND val cnn, N samples each) where the IDENTICAL samples are identical pairs."""
    root = demo_cnn_copy(tmp_path / "bapps", N)
    two, jnd = root / "2afc" / "val" / "cnn", root / "jnd" / "val" / "cnn"
    for i in IDENTICAL:
        shutil.copy(two / "ref" / f"{i:06d}.png", two / "p0" / f"{i:06d}.png")
        shutil.copy(jnd / "p0" / f"{i:06d}.png", jnd / "p1" / f"{i:06d}.png")
        np.save(jnd / "same" / f"{i:06d}.npy", np.array([1.0], dtype=np.float32))  # raters: the same
    return root


def _run(root: Path, out: Path, metrics: str = "psnr", *extra: str) -> int:
    return main(["run", "--metrics", metrics, "--dataset", "bapps", "--root", str(root), "--categories", "cnn",
                 "--out", str(out), "--workers", "0", "--batch-size", "8", "--bootstrap", "10", "--no-progress",
                 *extra])


def _summary(out: Path) -> dict[tuple[str, str, str], tuple[float, int]]:
    import csv

    with (out / "summary.csv").open(encoding="utf-8", newline="") as f:
        return {(r["kind"], r["metric"], r["statistic"]): (float(r["value"]), int(r["n"]))
                for r in csv.DictReader(f)}


def _official_2afc(d0: np.ndarray, d1: np.ndarray, h: np.ndarray) -> float:
    """LPIPS's 2AFC score on distances, element by element."""
    return float(np.mean((d0 < d1) * (1 - h) + (d1 < d0) * h + (d1 == d0) * 0.5))


def _official_jnd_map(d: np.ndarray, s: np.ndarray) -> float:
    """LPIPS's JND score: sort by distance, precision/recall per pair, VOC average precision."""
    order = np.argsort(d, kind="stable")
    same = s[order]
    tp = np.cumsum(same)
    fp = np.cumsum(1 - same)
    precision, recall = tp / (tp + fp), tp / same.sum()
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def test_infinite_psnr_is_stored_and_ordered_as_in_the_official_code(identical: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert _run(identical, out) == 0
    assert "NaN score(s)" not in capsys.readouterr().err  # nothing failed: no warning
    scores = read_table(out / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))
    pairs = read_table(out / "scores" / "jnd" / "cnn" / "psnr.csv", ("d",))
    names = [f"{i:06d}" for i in range(N)]
    assert [s for s in names if scores[s][0] == math.inf] == [names[i] for i in IDENTICAL]
    assert [s for s in names if pairs[s][0] == math.inf] == [names[i] for i in IDENTICAL]
    assert "000000,inf," in (out / "scores" / "2afc" / "cnn" / "psnr.csv").read_text(encoding="utf-8")
    judge = read_table(out / "judgments" / "2afc" / "cnn.csv", ("judge",))
    same = read_table(out / "judgments" / "jnd" / "cnn.csv", ("same",))
    # PSNR is a similarity: the official code negates it, so +inf becomes the smallest distance, -inf.
    d = -np.array([scores[s] for s in names])
    h = np.array([judge[s][0] for s in names])
    dj = -np.array([pairs[s][0] for s in names])
    sj = np.array([same[s][0] for s in names])
    summary = _summary(out)
    assert summary[("2afc", "psnr", "2afc_score")] == (pytest.approx(_official_2afc(d[:, 0], d[:, 1], h),
                                                                     abs=1e-12), N)
    assert summary[("jnd", "psnr", "jnd_map")] == (pytest.approx(_official_jnd_map(dj, sj), abs=1e-12), N)
    # Without the identical pairs the numbers differ: they are not silently dropped any more.
    keep = np.isfinite(dj)
    assert abs(summary[("jnd", "psnr", "jnd_map")][0] - _official_jnd_map(dj[keep], sj[keep])) > 0.01
    # Rank statistics keep every sample; Pearson's of d0 - d1 and of -d leave the infinite ones out.
    assert summary[("2afc", "psnr", "srcc_continuous")][1] == N
    assert summary[("2afc", "psnr", "plcc")][1] == N  # the decision is finite
    assert summary[("2afc", "psnr", "plcc_continuous")][1] == N - len(IDENTICAL)
    assert summary[("jnd", "psnr", "plcc")][1] == N - len(IDENTICAL)
    for name in ("tables.md", "tables.tex"):
        text = (out / name).read_text(encoding="utf-8")
        assert "psnr: infinite scores (4 of 20 in 2afc/cnn; 4 of 20 in jnd/cnn samples" in text
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert {e["value"] for e in record["nonfinite"]} == {"inf"} and len(record["nonfinite"]) == 2 * len(IDENTICAL)
    assert main(["tables", "--from", str(out)]) == 0  # the reports rebuild from the stored inf values


class AllNaNOnJND(Metric):
    """Mean absolute difference on 2AFC, NaN for every JND pair (the test sets ``jnd`` per batch)."""

    name = "t-nan-jnd"
    higher_is_better = False

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        out = (dist - ref).abs().mean(dim=(1, 2, 3))
        return torch.full_like(out, math.nan) if type(self).jnd else out

    jnd = False


def test_a_metric_with_no_finite_score_on_one_category_leaves_the_others_reported(
        identical: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import spips_bench.run.runner as evaluate

    reg = registry.Registry()
    reg.register_class(AllNaNOnJND, source="test")
    monkeypatch.setattr(registry, "REGISTRY", reg)
    real = evaluate.score_batch

    def flagged(kind: str, metric: object, batch: dict[str, object]) -> list[object]:
        AllNaNOnJND.jnd = kind == "jnd"
        return real(kind, metric, batch)

    monkeypatch.setattr(evaluate, "score_batch", flagged)
    out = tmp_path / "run"
    assert _run(identical, out, "t-nan-jnd,psnr") == 0
    assert "every judgment is NaN" not in capsys.readouterr().err
    summary = _summary(out)
    assert summary[("2afc", "t-nan-jnd", "2afc_score")][1] == N  # its other category is reported
    assert summary[("jnd", "psnr", "jnd_map")][1] == N  # and so is every other metric
    assert not any(k[:2] == ("jnd", "t-nan-jnd") for k in summary)
    note = f"t-nan-jnd on jnd/cnn: no statistics: every one of its {N} scores is NaN"
    for name in ("tables.md", "tables.tex"):
        assert note in (out / name).read_text(encoding="utf-8")
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "complete"
    assert main(["tables", "--from", str(out)]) == 0
