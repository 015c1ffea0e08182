"""`spips-bench run` / `tables` on the demo set: store, reports, resume, refusals, NaN, fast path, skips."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spips_bench import registry
from spips_bench.cli import main
from spips_bench.errors import RunConfigError, WeightsUnavailableError
from spips_bench.metric import Metric
from spips_bench.run.config import RunConfig
from spips_bench.run.runner import run_benchmark
from spips_bench.run.store import ScoreStore, read_table

# -- metrics defined here, so each runner behaviour is tested against a known computation -------------


def _pooled(x: torch.Tensor) -> torch.Tensor:
    # A convolution, so that batch-size-dependent kernels would show up in the byte-identity tests.
    weight = torch.full((3, 1, 3, 3), 1 / 9, dtype=x.dtype, device=x.device)
    return F.conv2d(x, weight, groups=3)


class PooledMAE(Metric):
    """Mean absolute difference of 3x3-pooled images (four passes per 2AFC triplet)."""

    name = "t-pool"
    higher_is_better = False
    min_size = 3

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return (_pooled(dist) - _pooled(ref)).abs().mean(dim=(1, 2, 3))


class PooledMAEFeatures(PooledMAE):
    """The same metric through features/compare (three passes per 2AFC triplet)."""

    name = "t-pool-feat"
    images_featurised = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        type(self).images_featurised += x.shape[0]
        return _pooled(x)

    def compare(self, f_dist: torch.Tensor, f_ref: torch.Tensor) -> torch.Tensor:
        return (f_dist - f_ref).abs().mean(dim=(1, 2, 3))


class SignedMeanDifference(Metric):
    """mean(dist) - mean(ref): not symmetric, so it shows the argument order."""

    name = "t-signed"
    symmetric = False

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return dist.double().mean(dim=(1, 2, 3)).float() - ref.double().mean(dim=(1, 2, 3)).float()


class EdgesNonFinite(PooledMAE):
    """NaN for the first and +Inf for the last pair of every batch."""

    name = "t-nonfinite"

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        out = super().score(dist, ref)
        out[0] = math.nan
        out[-1] = math.inf
        return out


class NeedsVGG(PooledMAE):
    """Declares the torchvision VGG16 weights, absent on an offline machine with an empty cache."""

    name = "t-needs-vgg"
    weights = ("vgg16",)


class WrongShape(PooledMAE):
    name = "t-wrong-shape"

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return super().score(dist, ref)[:, None]


@pytest.fixture
def zoo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> registry.Registry:
    """A registry of the built-ins plus the metrics above, replacing the process-wide one for a test."""
    reg = registry.Registry()
    for cls in (PooledMAE, PooledMAEFeatures, SignedMeanDifference, EdgesNonFinite, NeedsVGG, WrongShape):
        reg.register_class(cls, source="test")
    monkeypatch.setattr(registry, "REGISTRY", reg)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached ImageNet weights
    monkeypatch.delenv("SPIPS_BENCH_WEIGHTS", raising=False)
    return reg


def _config(out: Path, metrics: list[str], **kw: Any) -> RunConfig:
    base: dict[str, Any] = {"dataset": "demo", "categories": ["cnn"], "out": out, "workers": 0,
                            "bootstrap": 20, "progress": False, "batch_size": 16}
    base.update(kw)
    return RunConfig(metrics=metrics, **base)


def _files(out: Path) -> dict[str, bytes]:
    """Every store and report file of a run folder (not run.json: it holds times)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("run.json", ".lock")}


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


# -- end to end ----------------------------------------------------------------------------------------


def test_demo_run_end_to_end_with_psnr_and_ssim(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from skimage.metrics import peak_signal_noise_ratio

    # No root named and no ./datasets/bapps: the only case that falls back to the demo set.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPIPS_BENCH_BAPPS", raising=False)
    monkeypatch.delenv("SPIPS_BENCH_DATA", raising=False)
    out = tmp_path / "run"
    code = main(["run", "--metrics", "psnr,ssim", "--categories", "cnn,color", "--out", str(out), "--workers",
                 "1", "--bootstrap", "50", "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    assert "BAPPS not found under" in err and "synthetic judgments" in err
    for name in ("summary.csv", "tables.md", "tables.tex", "run.json", "judgments/2afc/color.csv",
                 "scores/2afc/cnn/psnr.csv", "scores/2afc/color/ssim.csv", "scores/jnd/cnn/ssim.csv"):
        assert (out / name).is_file(), name
    assert not (out / "scores" / "jnd" / "color").exists()  # color has no JND judgments
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "complete" and record["dataset"]["synthetic_judgments"] is True
    assert record["categories"] == {"2afc/cnn": 60, "2afc/color": 60, "jnd/cnn": 60}
    assert record["metrics"]["psnr"]["status"] == "ok"
    assert "Demo set (synthetic judgments)" in (out / "tables.md").read_text(encoding="utf-8")

    # PSNR of stored scores against scikit-image on the PNG files themselves (float32 inside the metric).
    scores = read_table(out / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))
    folder = demo / "2afc" / "val" / "cnn"
    for sample in ("000000", "000037"):
        ref = _png(folder / "ref" / f"{sample}.png")
        for k, part in enumerate(("p0", "p1")):
            expected = peak_signal_noise_ratio(ref, _png(folder / part / f"{sample}.png"), data_range=255)
            assert scores[sample][k] == pytest.approx(expected, abs=1e-3)

    # The 2AFC score in summary.csv against the protocol's formula on the stored values (PSNR: higher
    # is better, so p1 is chosen when d1 > d0).
    judge = read_table(out / "judgments" / "2afc" / "cnn.csv", ("judge",))
    d = np.array([scores[s] for s in sorted(judge)])
    h = np.array([judge[s][0] for s in sorted(judge)])
    expected = np.mean((d[:, 1] < d[:, 0]) * (1 - h) + (d[:, 1] > d[:, 0]) * h + (d[:, 0] == d[:, 1]) * 0.5)
    rows = [line.split(",") for line in (out / "summary.csv").read_text(encoding="utf-8").splitlines()]
    row = next(r for r in rows if r[:4] == ["2afc", "cnn", "psnr", "2afc_score"])
    assert float(row[4]) == pytest.approx(expected, abs=1e-12)


def test_tables_are_rebuilt_from_the_store_alone(zoo: registry.Registry, demo: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    run_benchmark(_config(out, ["t-pool", "t-signed"]))
    before = _files(out)
    for name in ("summary.csv", "tables.md", "tables.tex"):
        (out / name).unlink()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("`tables` must not create a metric or read the dataset")

    monkeypatch.setattr(registry, "create_metric", refuse)
    monkeypatch.setattr(registry.Registry, "create", refuse)
    import spips_bench.data.bapps as bapps

    monkeypatch.setattr(bapps.TwoAFCDataset, "__init__", refuse)
    monkeypatch.setattr(bapps.JNDDataset, "__init__", refuse)
    assert main(["tables", "--from", str(out)]) == 0
    assert _files(out) == before


def test_argument_order_dist_then_ref(zoo: registry.Registry, demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_benchmark(_config(out, ["t-signed"]))
    s2 = read_table(out / "scores" / "2afc" / "cnn" / "t-signed.csv", ("d0", "d1"))["000005"]
    s1 = read_table(out / "scores" / "jnd" / "cnn" / "t-signed.csv", ("d",))["000005"]
    f2, f1 = demo / "2afc" / "val" / "cnn", demo / "jnd" / "val" / "cnn"

    def mean(p: Path) -> float:
        return float(_png(p).mean() / 255)

    ref = mean(f2 / "ref" / "000005.png")
    assert s2[0] == pytest.approx(mean(f2 / "p0" / "000005.png") - ref, abs=1e-6)  # d0 = metric(p0, ref)
    assert s2[1] == pytest.approx(mean(f2 / "p1" / "000005.png") - ref, abs=1e-6)  # d1 = metric(p1, ref)
    # JND: d = metric(p0, p1), p0 as the distorted image and p1 as the reference.
    assert s1[0] == pytest.approx(mean(f1 / "p0" / "000005.png") - mean(f1 / "p1" / "000005.png"), abs=1e-6)


# -- resume, refusals, lock ------------------------------------------------------------------------------


def test_interrupted_run_resumes_to_identical_results(zoo: registry.Registry, demo: Path, tmp_path: Path,
                                                      ) -> None:
    metrics = ["t-pool", "t-signed"]
    run_benchmark(_config(tmp_path / "whole", metrics))

    calls: list[tuple[str, str, int]] = []

    def interrupt(kind: str, category: str, flushed: int) -> None:
        calls.append((kind, category, flushed))
        raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(_config(out, metrics, flush_every=2), hook=interrupt)
    assert calls == [("2afc", "cnn", 2)]
    stored = read_table(out / "scores" / "2afc" / "cnn" / "t-pool.csv", ("d0", "d1"))
    assert sorted(stored) == [f"{i:06d}" for i in range(32)]  # exactly the first chunk: 2 batches of 16
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "interrupted"
    result = run_benchmark(_config(out, metrics, flush_every=2))
    assert result.record["status"] == "complete"
    assert _files(out) == _files(tmp_path / "whole")


def test_changed_configuration_is_refused_unless_overwrite(zoo: registry.Registry, demo: Path, tmp_path: Path,
                                                           ) -> None:
    out = tmp_path / "run"
    run_benchmark(_config(out, ["t-pool"]))
    with pytest.raises(RunConfigError, match=r"load_size = 64, this run has load_size = 32.*another --out"):
        run_benchmark(_config(out, ["t-pool"], load_size=32))
    run_benchmark(_config(out, ["t-signed"]))  # adding a metric to the same configuration is fine
    assert (out / "scores" / "2afc" / "cnn" / "t-pool.csv").is_file()
    result = run_benchmark(_config(out, ["t-pool"], load_size=32, overwrite=True))
    assert result.record["dataset"]["load_size"] == 32
    assert not (out / "scores" / "2afc" / "cnn" / "t-signed.csv").exists()


def test_a_concurrent_run_on_the_same_folder_is_refused(zoo: registry.Registry, demo: Path, tmp_path: Path,
                                                       ) -> None:
    out = tmp_path / "run"
    with ScoreStore(out).lock(), pytest.raises(RunConfigError, match="in use by another spips-bench run"):
        run_benchmark(_config(out, ["t-pool"]))


def test_a_folder_that_is_not_a_run_is_refused(zoo: registry.Registry, demo: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("x", encoding="utf-8")
    with pytest.raises(RunConfigError, match=r"holds no run\.json"):
        run_benchmark(_config(tmp_path, ["t-pool"]))


# -- metric behaviours -----------------------------------------------------------------------------------


def test_nonfinite_scores_are_stored_as_nan_reported_and_excluded(zoo: registry.Registry, demo: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_benchmark(_config(out, ["t-nonfinite", "t-pool"], kinds=["2afc"]))
    # Batches of 16 over 60 triplets: NaN for the first, +inf for the last of each batch.
    firsts = [f"{b:06d}" for b in range(0, 60, 16)]
    lasts = [f"{min(b + 15, 59):06d}" for b in range(0, 60, 16)]
    stored = read_table(out / "scores" / "2afc" / "cnn" / "t-nonfinite.csv", ("d0", "d1"))
    assert sorted(s for s, v in stored.items() if math.isnan(v[0])) == firsts
    assert sorted(s for s, v in stored.items() if v == (math.inf, math.inf)) == lasts  # kept as inf
    listed = {(w["sample"], w["column"], w["value"]) for w in result.record["nonfinite"]}
    assert listed == ({(s, c, "nan") for s in firsts for c in ("d0", "d1")}
                      | {(s, c, "inf") for s in lasts for c in ("d0", "d1")})
    rows = [line.split(",") for line in (out / "summary.csv").read_text(encoding="utf-8").splitlines()[1:]]
    n = {r[2]: int(r[7]) for r in rows if r[3] == "2afc_score"}
    assert n == {"t-nonfinite": 60 - len(firsts), "t-pool": 60}  # NaN out, +inf in (both inf: a tie)
    tables = (out / "tables.md").read_text(encoding="utf-8")
    assert "t-nonfinite: NaN scores excluded from all statistics (4 of 60 in 2afc/cnn" in tables
    assert "t-nonfinite: infinite scores (4 of 60 in 2afc/cnn samples" in tables


def test_three_pass_features_path_equals_four_pass_path(zoo: registry.Registry, demo: Path, tmp_path: Path,
                                                        ) -> None:
    out = tmp_path / "run"
    PooledMAEFeatures.images_featurised = 0
    run_benchmark(_config(out, ["t-pool", "t-pool-feat"], kinds=["2afc"]))
    assert PooledMAEFeatures.images_featurised == 3 * 60  # ref, p0 and p1 once each
    four = (out / "scores" / "2afc" / "cnn" / "t-pool.csv").read_text(encoding="utf-8")
    three = (out / "scores" / "2afc" / "cnn" / "t-pool-feat.csv").read_text(encoding="utf-8")
    assert three == four


def test_a_metric_breaking_the_output_contract_is_named(zoo: registry.Registry, demo: Path, tmp_path: Path,
                                                        ) -> None:
    with pytest.raises(ValueError, match=r"WrongShape returned \(16, 1\).*\(16,\) tensor"):
        run_benchmark(_config(tmp_path / "run", ["t-wrong-shape"]))


def test_missing_weights_are_skipped_with_a_footnote_or_fail_strict(
        zoo: registry.Registry, demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    result = run_benchmark(_config(out, ["t-pool", "t-needs-vgg"]))
    info = result.record["metrics"]["t-needs-vgg"]
    assert info["status"] == "skipped" and "vgg16" in info["reason"]
    assert not (out / "scores" / "2afc" / "cnn" / "t-needs-vgg.csv").exists()
    for name in ("tables.md", "tables.tex"):
        assert "Not run: t-needs-vgg (weight file vgg16 not on this machine" in (out / name).read_text(
            encoding="utf-8")
    with pytest.raises(WeightsUnavailableError, match=r"t-needs-vgg.*vgg16"):
        run_benchmark(_config(tmp_path / "strict", ["t-pool", "t-needs-vgg"], strict=True))
    code = main(["run", "--metrics", "t-needs-vgg", "--dataset", "demo", "--strict", "--out",
                 str(tmp_path / "cli"), "--workers", "0", "--no-progress"])
    assert code == 2 and "vgg16" in capsys.readouterr().err


def test_check_of_committed_results(zoo: registry.Registry, demo: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    run_benchmark(_config(out, ["t-pool"]))
    run_benchmark(_config(out, ["t-signed"], kinds=["jnd"]))  # a second invocation adds to the folder
    committed = tmp_path / "committed"
    committed.mkdir()
    for name in ("run.json", "summary.csv", "tables.md", "tables.tex"):
        shutil.copy(out / name, committed / name)
    assert main(["tables", "--check", str(committed)]) == 0
    assert "t-signed" in (committed / "summary.csv").read_text(encoding="utf-8")
    (committed / "tables.md").write_text("edited\n", encoding="utf-8")
    assert main(["tables", "--check", str(committed)]) == 1
    assert "differ from the committed ones" in capsys.readouterr().err


def test_amp_on_cpu_scores_in_bfloat16_and_is_part_of_the_fingerprint(zoo: registry.Registry, demo: Path,
                                                                       tmp_path: Path) -> None:
    run_benchmark(_config(tmp_path / "fp32", ["t-pool"], kinds=["jnd"]))
    result = run_benchmark(_config(tmp_path / "amp", ["t-pool"], kinds=["jnd"], amp=True))
    assert result.record["fingerprint"]["global"]["amp"] is True
    exact = read_table(tmp_path / "fp32" / "scores" / "jnd" / "cnn" / "t-pool.csv", ("d",))
    low = read_table(tmp_path / "amp" / "scores" / "jnd" / "cnn" / "t-pool.csv", ("d",))
    a = np.array([exact[s][0] for s in sorted(exact)])
    b = np.array([low[s][0] for s in sorted(exact)])
    # bfloat16 keeps 8 significant bits: relative error up to 2**-8 per operand, a few operands deep.
    assert np.allclose(a, b, rtol=3e-2, atol=1e-3) and not np.array_equal(a, b)
    with pytest.raises(RunConfigError, match="amp = True, this run has amp = False"):
        run_benchmark(_config(tmp_path / "amp", ["t-pool"], kinds=["jnd"]))


@pytest.mark.parametrize(("changes", "message"), [
    ({"kinds": ["jnd"], "split": "train"}, "JND judgments for val only"),
    ({"categories": ["superress"]}, "no category 'superress'.*Did you mean 'superres'"),
    ({"kinds": ["2afc", "mos"]}, "unknown kind 'mos'"),
])
def test_bad_plans_are_refused_before_any_work(changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    from spips_bench.run.plan import resolve_plan

    with pytest.raises(ValueError, match=message):
        resolve_plan(_config(tmp_path, ["t-pool"], **changes))
