"""The comparison figures (the paper's Figs. 3-4): explain_compare, the triplet picks of a run, the CLI."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spips_bench.errors import DatasetError, RunConfigError, UntrainedHeadsWarning, WeightsIntegrityError
from spips_bench.zoo.spips.model import SPIPS

FULL, ABLA = "spips-alex-st", "spips-alex-st-abla1"
SAMPLE = "000056"  # a demo cnn triplet on which the two untrained models disagree


def _create(name: str, **options: Any) -> Any:
    from spips_bench.registry import create_metric

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadsWarning)
        return create_metric(name, **options)


@pytest.fixture(scope="module")
def models() -> list[tuple[str, SPIPS]]:
    return [("SPIPS", _create(FULL)), ("ablation", _create(ABLA))]


def _triplet(root: Path, category: str, sample: str) -> tuple[torch.Tensor, ...]:
    from spips_bench.data.images import read_image

    return tuple(read_image(root / "2afc" / "val" / category / part / f"{sample}.png", 64).tensor()[None]
                 for part in ("ref", "p0", "p1"))


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decodes the whole file
        assert im.format == "PNG"
        return im.size


# -- explain_compare ------------------------------------------------------------------------------------

def test_compare_figure_shows_the_scores_maps_and_judge_on_shared_scales(models: list[tuple[str, SPIPS]],
                                                                         demo: Path, tmp_path: Path) -> None:
    from spips_bench.data.bapps import read_judgment
    from spips_bench.zoo.spips.explain import COMBINED, MAP_MEAN_RTOL, explain_compare

    ref, p0, p1 = _triplet(demo, "cnn", SAMPLE)
    judge = read_judgment(demo / "2afc" / "val" / "cnn" / "judge" / f"{SAMPLE}.npy")
    out = tmp_path / "fig.png"
    r = explain_compare(models, ref, p0, p1, judge=judge, title="t", out=out)
    width, height = _png_size(out)
    assert r.figure == out and width >= 900 and height >= 1200  # each 64-px patch drawn at about 3.5x

    assert r.judge == judge and r.human == ("image1" if judge > 0.5 else "image0")
    assert r.rows == [COMBINED, "traditional", "perceptual", "semantic"]
    for (label, metric), m in zip(models, r.models, strict=True):
        assert m.label == label and m.trained is False and m.fusion == "sum"
        with torch.no_grad():
            direct = (float(metric(p0, ref)[0]), float(metric(p1, ref)[0]))
            values = [metric.stream_values(metric.features(d), metric.features(ref))[0] for d in (p0, p1)]
        assert m.scores == pytest.approx(direct, abs=1e-6)
        assert m.prefers == ("image0" if direct[0] < direct[1] else "image1")
        # the combined map is the weighted sum of the stream maps, and its mean is the score: within the
        # bound of the bilinear resizing (3.6 % for alex-st at 64 px), and measured within 1e-3 here
        assert 0 < m.mean_bound <= MAP_MEAN_RTOL
        for i in range(2):
            combined = r.maps[label][COMBINED][i]
            assert torch.allclose(combined, torch.stack([r.maps[label][s][i] for s in m.streams]).sum(0),
                                  atol=1e-6)
            assert abs(float(combined.mean()) - m.scores[i]) <= m.mean_bound * m.scores[i] + 1e-6
            assert float(combined.mean()) == pytest.approx(m.scores[i], rel=1e-3)
            assert m.map_means[i] == pytest.approx(float(combined.mean()), abs=1e-7)
            lambdas = metric.lambdas.detach()
            assert m.weights[i] == pytest.approx({s: float(lambdas[j]) for j, s in enumerate(m.streams)}, abs=1e-7)
            # the traditional map is not resized: its mean is the stream value
            assert m.stream_means["traditional"][i] == pytest.approx(float(values[i][0]), rel=1e-5)
    assert "semantic" not in r.maps["ablation"] and "semantic" in r.maps["SPIPS"]
    # one colour scale per row: [min(0, row min), row max] over both models and both images, and every map
    # drawn in the row has exactly these limits
    for row in r.rows:
        cells = [t for maps in r.maps.values() if row in maps for t in maps[row]]
        assert r.limits[row] == pytest.approx((min(0.0, min(float(t.min()) for t in cells)),
                                               max(float(t.max()) for t in cells)))
        assert len(r.cell_limits[row]) == len(cells)
        assert all(c == pytest.approx(r.limits[row]) for c in r.cell_limits[row])
    assert len(r.cell_limits["semantic"]) == 2 and len(r.cell_limits[COMBINED]) == 4


def test_mlp_fusion_weights_are_the_fusion_gradient(photos_pair: tuple[torch.Tensor, ...], tmp_path: Path) -> None:
    from spips_bench.zoo.spips.explain import COMBINED, explain_compare

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadsWarning)
        metric = SPIPS("alex", pretrained=False, fusion="mlp")
    assert metric.fusion_mlp is not None
    with torch.no_grad():  # a fusion away from the data-free one, where the weights would all be 1/3
        for p in metric.fusion_mlp.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ref, p0, p1 = photos_pair
    r = explain_compare([("mlp", metric)], ref, p0, p1, judge=None, title="mlp", out=tmp_path / "mlp.png")
    m = r.models[0]
    assert r.human is None and m.fusion == "mlp"
    assert any("MLP fusion" in n and "not the score" in n for n in r.notes)
    for i, d in enumerate((p0, p1)):
        with torch.no_grad():
            v = metric.stream_values(metric.features(d), metric.features(ref)).double()
            for j, s in enumerate(m.streams):
                step = torch.zeros_like(v)
                step[0, j] = 1e-3
                numeric = float(metric.fuse((v + step).float()) - metric.fuse((v - step).float())) / 2e-3
                assert m.weights[i][s] == pytest.approx(numeric, rel=1e-2, abs=1e-4)
        combined = r.maps["mlp"][COMBINED][i]
        assert float(combined.mean()) == pytest.approx(sum(m.weights[i][s] * m.stream_means[s][i] for s in m.streams),
                                                       rel=1e-4, abs=1e-7)
    assert _png_size(tmp_path / "mlp.png")[0] > 400


@pytest.fixture(scope="module")
def photos_pair() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(3)
    ref = torch.rand(1, 3, 64, 64, generator=gen)
    return ref, (ref + 0.1 * torch.randn(ref.shape, generator=gen)).clamp(0, 1), (ref * 0.8).clamp(0, 1)


def test_compare_refuses_what_it_cannot_draw(models: list[tuple[str, SPIPS]], photos_pair: tuple[torch.Tensor, ...],
                                             tmp_path: Path) -> None:
    from spips_bench.zoo.spips.explain import explain_compare

    ref, p0, p1 = photos_pair
    out = tmp_path / "never.png"
    with pytest.raises(TypeError, match="'psnr' is a"):
        explain_compare([("psnr", _create("psnr"))], ref, p0, p1, judge=None, title="t", out=out)
    with pytest.raises(ValueError, match="repeat"):
        explain_compare([("a", models[0][1]), ("a", models[1][1])], ref, p0, p1, judge=None, title="t", out=out)
    with pytest.raises(ValueError, match=r"judge=1\.5"):
        explain_compare(models, ref, p0, p1, judge=1.5, title="t", out=out)
    with pytest.raises(ValueError, match="same shape"):
        explain_compare(models, ref, p0[..., :48, :48], p1, judge=None, title="t", out=out)
    with pytest.raises(ValueError, match="at least one"):
        explain_compare([], ref, p0, p1, judge=None, title="t", out=out)
    assert not out.exists()


# -- pick_triplets on a store written by hand ----------------------------------------------------------

def _write_run(folder: Path, data: Path, metrics: dict[str, bool],
               rows: dict[str, dict[str, tuple[float, dict[str, tuple[float, float]]]]]) -> None:
    """A run folder whose store holds ``rows[category][sample] = (judge, {metric: (d0, d1)})``, and a data
    root with one small PNG per image."""
    from PIL import Image

    from spips_bench.run.store import ScoreStore

    store = ScoreStore(folder)
    store.write_run({"metrics": {m: {"higher_is_better": hib} for m, hib in metrics.items()},
                     "dataset": {"root": str(data), "split": "val", "load_size": 64, "synthetic_judgments": False}})
    writers = []
    for category, samples in rows.items():
        jw = store.judgment_writer("2afc", category)
        sw = {m: store.score_writer("2afc", category, m) for m in metrics}
        for sample, (judge, scores) in samples.items():
            jw.add(sample, (judge,))
            for m, d in scores.items():
                sw[m].add(sample, d)
            for part in ("ref", "p0", "p1"):
                (data / "2afc" / "val" / category / part).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8)).save(data / "2afc" / "val" / category / part / f"{sample}.png")
        writers += [jw, *sw.values()]
    store.flush(writers)


def test_pick_triplets_keeps_disagreements_the_raters_decide_ranked_one_category_first(tmp_path: Path) -> None:
    from spips_bench.report.figures import pick_triplets

    run, data = tmp_path / "run", tmp_path / "data"
    # "a" is a distance (lower = closer), "b" a similarity (higher = closer): equal scores, opposite choices
    rows = {
        "cnn": {
            "000001": (1.0, {"a": (0.9, 0.1), "b": (0.9, 0.1)}),    # a: p1, b: p0; raters p1; margins 0.8
            "000002": (0.0, {"a": (0.9, 0.1), "b": (0.9, 0.1)}),    # raters p0: side with b
            "000003": (0.8, {"a": (0.6, 0.4), "b": (0.6, 0.4)}),    # clarity 0.3 (float 0.8 - 0.5), margin 0.2
            "000004": (0.6, {"a": (0.9, 0.1), "b": (0.9, 0.1)}),    # raters split: left out
            "000005": (1.0, {"a": (0.9, 0.1), "b": (0.1, 0.9)}),    # the metrics agree: left out
            "000006": (1.0, {"a": (0.5, 0.5), "b": (0.9, 0.1)}),    # a tie: left out
            "000007": (1.0, {"a": (math.nan, 0.5), "b": (0.9, 0.1)}),  # a failed score: left out
            "000000": (1.0, {"a": (0.9, 0.1), "b": (0.9, 0.1)}),    # same key as 000001: name breaks the tie
        },
        "traditional": {
            "000009": (0.2, {"a": (0.5, 0.3), "b": (0.5, 0.3)}),    # clarity 0.3 (0.5 - float 0.2), margin 0.25
        },
    }
    _write_run(run, data, {"a": False, "b": True}, rows)
    picks = pick_triplets(run, "a", "b", count=10)
    # best of each category first (cnn's best, then traditional's), then the rest in rank order
    assert [(t.category, t.sample) for t in picks] == [("cnn", "000000"), ("traditional", "000009"),
                                                        ("cnn", "000001"), ("cnn", "000002"), ("cnn", "000003")]
    by = {t.sample: t for t in picks}
    assert by["000001"].sides_with == "a" and by["000002"].sides_with == "b" and by["000009"].sides_with == "b"
    assert by["000001"].margin == pytest.approx(0.8) and by["000009"].margin == pytest.approx(0.25)
    assert by["000001"].scores == {"a": pytest.approx((0.9, 0.1)), "b": pytest.approx((0.9, 0.1))}
    assert by["000003"].judge == pytest.approx(0.8)
    assert by["000001"].paths == tuple(data / "2afc" / "val" / "cnn" / p / "000001.png" for p in ("ref", "p0", "p1"))
    assert [t.sample for t in pick_triplets(run, "a", "b")] == ["000000", "000009"]
    assert [t.sample for t in pick_triplets(run, "a", "b", count=10, side="a")] == ["000000", "000001", "000003"]
    assert [t.sample for t in pick_triplets(run, "a", "b", count=10, min_clarity=0.5)] == ["000000", "000001",
                                                                                          "000002"]
    assert pick_triplets(run, "a", "b", count=10) == picks  # deterministic
    with pytest.raises(RunConfigError, match="no metric 'c'"):
        pick_triplets(run, "a", "c")
    with pytest.raises(RunConfigError, match="not a run folder"):
        pick_triplets(tmp_path / "nothing", "a", "b")
    with pytest.raises(ValueError, match="side="):
        pick_triplets(run, "a", "b", side="c")
    (data / "2afc" / "val" / "cnn" / "p1" / "000000.png").unlink()
    with pytest.raises(DatasetError, match=r"cnn/p1/000000\.png: not found.*root="):
        pick_triplets(run, "a", "b")


# -- a real run on the demo set: picks, models and figures ---------------------------------------------

@pytest.fixture(scope="module")
def demo_run(demo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The two variants scored on the demo set's 2AFC cnn, the full one with trained heads (a checkpoint
    whose stream weights differ from the data-free ones)."""
    from spips_bench.data.demo import DEMO_VERSION
    from spips_bench.run.config import RunConfig
    from spips_bench.run.runner import run_benchmark

    base = tmp_path_factory.mktemp("figures-run")
    full = _create(FULL)
    with torch.no_grad():
        full.logits.copy_(torch.tensor([0.0, 0.5, 1.0]))
    ckpt = full.save_checkpoint(base / "full.safetensors")
    out = base / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIPS_BENCH_CACHE", str(demo_cache))
        run_benchmark(RunConfig(metrics=[FULL, ABLA], dataset="demo", root=demo_cache / f"demo-v{DEMO_VERSION}",
                                kinds=["2afc"], categories=["cnn"], out=out, device="cpu", bootstrap=10,
                                progress=False, checkpoints={FULL: ckpt}))
    return out, ckpt


def _read_csv(path: Path) -> dict[str, list[float]]:
    with path.open(newline="") as fh:
        return {row[0]: [float(v) for v in row[1:]] for row in list(csv.reader(fh))[1:]}


def test_picks_of_a_demo_run_match_a_computation_from_the_store_files(demo_run: tuple[Path, Path]) -> None:
    from spips_bench.data.bapps import read_judgment
    from spips_bench.report.figures import pick_triplets

    run, _ = demo_run
    judge = _read_csv(run / "judgments" / "2afc" / "cnn.csv")
    a = _read_csv(run / "scores" / "2afc" / "cnn" / f"{FULL}.csv")
    b = _read_csv(run / "scores" / "2afc" / "cnn" / f"{ABLA}.csv")
    names = sorted(judge)
    h = np.array([judge[n][0] for n in names])
    da, db = np.array([a[n] for n in names]), np.array([b[n] for n in names])
    disagree = np.sign(da[:, 1] - da[:, 0]) * np.sign(db[:, 1] - db[:, 0]) < 0
    clear = np.abs(h - 0.5) >= 0.3 - 1e-6
    expected = {n for n, keep in zip(names, disagree & clear, strict=True) if keep}
    assert expected, "the demo cnn category has disagreeing triplets with clear judgments"
    picks = pick_triplets(run, FULL, ABLA, count=1000)
    assert {t.sample for t in picks} == expected
    for t in picks:
        assert t.synthetic is True and t.category == "cnn"
        assert t.judge == pytest.approx(read_judgment(t.paths[0].parents[1] / "judge" / f"{t.sample}.npy"), abs=1e-6)
        human_p1 = t.judge > 0.5
        full_p1 = a[t.sample][1] < a[t.sample][0]
        assert t.sides_with == (FULL if full_p1 == human_p1 else ABLA)
    keys = [(-round(abs(t.judge - 0.5), 6), -t.margin, t.sample) for t in picks]
    assert keys == sorted(keys)  # one category: plain rank order


def test_draw_disagreements_builds_the_run_models_and_writes_one_figure_per_pick(
        demo_run: tuple[Path, Path], tmp_path: Path) -> None:
    from spips_bench.report.figures import draw_disagreements, figure_name, pick_triplets, run_metric

    run, ckpt = demo_run
    full = run_metric(run, FULL)
    assert full.trained and full.checkpoint_sha256 is not None
    assert float(full.lambdas.detach()[2]) > float(full.lambdas.detach()[0])  # the checkpoint's, not data-free
    assert not run_metric(run, ABLA).trained
    paths = draw_disagreements(run, FULL, ABLA, tmp_path / "figs", count=1, labels=("SPIPS", "ablation"))
    picks = pick_triplets(run, FULL, ABLA, count=1)
    assert paths == [tmp_path / "figs" / figure_name(FULL, ABLA, t) for t in picks] and len(paths) == 1
    for p in paths:
        assert _png_size(p)[1] > 1000
    # the models drawn score the triplet as the run stored it
    from spips_bench.data.images import read_image

    t = picks[0]
    ref, p0, p1 = (read_image(p, 64).tensor()[None] for p in t.paths)
    with torch.no_grad():
        assert (float(full(p0, ref)[0]), float(full(p1, ref)[0])) == pytest.approx(t.scores[FULL], abs=1e-5)
    # a checkpoint that changed since the run is refused, naming both hashes
    changed = tmp_path / "changed.safetensors"
    changed.write_bytes(ckpt.read_bytes() + b" ")
    with pytest.raises(WeightsIntegrityError, match="not the checkpoint the run scored with"):
        run_metric(run, FULL, checkpoint=changed)
    with pytest.raises(ValueError, match="two distinct names"):
        draw_disagreements(run, FULL, ABLA, tmp_path / "figs", labels=("x", "x"))


# -- the command line ----------------------------------------------------------------------------------

def test_explain_draws_a_bapps_triplet_beside_an_ablation(demo: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from spips_bench.cli import main
    from spips_bench.data.bapps import read_judgment

    ckpt = _create(ABLA).save_checkpoint(tmp_path / "abla.safetensors")
    out = tmp_path / "fig.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedHeadsWarning)  # the command labels untrained models itself
        code = main(["explain", "--bapps", str(demo), "--category", "cnn", "--sample", SAMPLE, "--metric", FULL,
                     "--compare", ABLA, "--checkpoint", f"{ABLA}={ckpt}", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and _png_size(out)[1] > 1000
    judge = read_judgment(demo / "2afc" / "val" / "cnn" / "judge" / f"{SAMPLE}.npy")
    assert f"{FULL} (untrained" in text and f"{ABLA} (trained)" in text
    assert f"synthetic preference: {'image1' if judge > 0.5 else 'image0'} (judge {judge:.2f}" in text
    assert "demo set (synthetic judgments) 2AFC val/cnn/" + SAMPLE in text


def test_explain_on_a_bapps_root_names_the_human_preference(demo_cnn_copy: Any, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from spips_bench.cli import main

    root = demo_cnn_copy(tmp_path / "bapps", 3)
    out = tmp_path / "one.png"
    assert main(["explain", "--bapps", str(root), "--category", "cnn", "--sample", "000002", "--metric", FULL,
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "human preference:" in text and "BAPPS 2AFC val/cnn/000002" in text and out.is_file()


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"--sample": "123"}, r"2afc/val/cnn: no triplet '123' .* it holds 60, e\.g\. 000000, 000001"),
        ({"--compare": "psnr"}, "--compare psnr: explain draws the quality maps of SPIPS's streams, and psnr is not"),
        ({"--compare": FULL}, "the same variant as --metric"),
        ({"--checkpoint": "lpips=x.safetensors"}, "lpips is not drawn here"),
        ({"--checkpoint": f"{ABLA}=absent.safetensors"}, "absent.safetensors: no such file"),
        ({"--category": "cnnn"}, "Did you mean 'cnn'"),
        ({"REF": "ref.png"}, "either image files"),
    ],
)
def test_explain_bapps_errors_are_one_line(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           changes: dict[str, str], pattern: str) -> None:
    import re

    from spips_bench.cli import main

    args = {"--bapps": str(demo), "--category": "cnn", "--sample": SAMPLE, "--metric": FULL, "--compare": ABLA,
            "--out": str(tmp_path / "never.png"), **changes}
    positional = [args.pop("REF")] if "REF" in args else []
    assert main(["explain", *positional, *(x for kv in args.items() for x in kv)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert not (tmp_path / "never.png").exists()


def test_explain_file_form_needs_two_images_to_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spips_bench.cli import main

    out = str(tmp_path / "never.png")
    assert main(["explain", "r.png", "a.png", "--metric", FULL, "--compare", ABLA, "--out", out]) == 2
    assert "--compare draws both models on a triplet: give REF IMG0 IMG1" in capsys.readouterr().err
    assert main(["explain", "--sample", "000001", "--out", out]) == 2
    assert "pass --bapps ROOT" in capsys.readouterr().err
    assert main(["explain", "--out", out]) == 2
    assert "explain needs REF IMG0 [IMG1]" in capsys.readouterr().err


def test_explain_compares_two_image_files(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spips_bench.cli import main

    folder = demo / "2afc" / "val" / "traditional"
    files = [str(folder / part / "000003.png") for part in ("ref", "p0", "p1")]
    out = tmp_path / "files.png"
    assert main(["explain", *files, "--metric", FULL, "--compare", ABLA, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "prefers" in text and "preference" not in text and out.is_file()
