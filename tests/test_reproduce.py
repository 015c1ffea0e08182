"""`spips-bench reproduce`: the paper's pipeline end to end on the demo set, resuming, redoing, refusing."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

from spips_bench.errors import DatasetError, UntrainedHeadsWarning, WeightsIntegrityError, WeightsUnavailableError
from spips_bench.paper.pipeline import ReproduceResult, StageBook, digest, reproduce
from spips_bench.paper.recipe import ROLES, load_recipe, register_variants

#: The demo pipeline in its smallest form: 3 samples per category, one epoch, a short bootstrap.
SMALL: dict[str, Any] = {"dataset": "demo", "backbone": "alex-st", "device": "cpu", "epochs": 1,
                         "offline": True, "max_samples": 3, "progress": False, "bootstrap": 20}


def _run(out: Path, lines: list[str] | None = None, **changes: Any) -> ReproduceResult:
    sink = lines if lines is not None else []
    return reproduce(None, out, log=sink.append, **{**SMALL, **changes})


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo_env(demo_cache: Path) -> Path:
    """The cache holding the demo set (the session's, from conftest.py), shared by the tests of this file."""
    return demo_cache


@pytest.fixture
def env(demo_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPIPS_BENCH_CACHE", str(demo_env))
    monkeypatch.delenv("SPIPS_BENCH_BAPPS", raising=False)
    return demo_env


@pytest.fixture(scope="module")
def first(demo_env: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReproduceResult]:
    """One complete demo pipeline (every stage done), kept for the tests that read or copy it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SPIPS_BENCH_CACHE", str(demo_env))
    mp.delenv("SPIPS_BENCH_BAPPS", raising=False)
    try:
        out = tmp_path_factory.mktemp("reproduce") / "out"
        return out, _run(out)
    finally:
        mp.undo()


def _names(backbone: str = "alex-st") -> list[str]:
    return [v.metric for v in load_recipe().variants(backbone)]


# -- the whole pipeline ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_demo_pipeline_trains_scores_and_reports_every_model(first: tuple[Path, ReproduceResult]) -> None:
    from spips_bench.registry import create_metric

    out, result = first
    names = _names()
    assert result.synthetic
    assert result.skipped() == []
    assert result.done() == ["data", "weights", *(f"train/{n}" for n in names), "scoring", "tables", "figures",
                             "report"]
    # trained checkpoints, loadable, and marked trained with their SHA-256 in run.json
    record = json.loads((out / "run" / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "complete"
    from spips_bench.io import sha256_file

    for name in names:
        ckpt = out / "train" / name / "final.safetensors"
        assert result.checkpoints[name] == ckpt and ckpt.is_file()
        metric = create_metric(name, checkpoint=str(ckpt))
        assert metric.trained
        entry = record["metrics"][name]
        assert entry["trained"] is True and entry["status"] == "ok"
        assert entry["checkpoint_sha256"] == sha256_file(ckpt)
    # the baselines that run offline are scored; the others are named in report.md
    for baseline in ("psnr", "ssim", "vif"):
        assert record["metrics"][baseline]["status"] == "ok"
    # tables: the three trained models under their display names, the synthetic banner on the comparison
    md = result.tables["md"].read_text(encoding="utf-8")
    tex = result.tables["tex"].read_text(encoding="utf-8")
    recipe = load_recipe()
    for role in ROLES:
        assert recipe.roles[role]["display"] in md
    assert "synthetic judgments" in md and "not comparable" in md
    assert "synthetic" in tex
    # Figs. 3 and 4
    assert len(result.figures) == 2
    assert result.figures[0].name.startswith(f"fig3-{names[0]}-vs-{names[1]}-")
    assert result.figures[1].name.startswith(f"fig4-{names[0]}-vs-{names[2]}-")
    for p in result.figures:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # report.md: the data, the resolution, the backbone, each checkpoint's sha256, the stage times
    report = result.report.read_text(encoding="utf-8")
    assert "synthetic demo set, judgments simulated, not human" in report
    assert "64 px" in report and "Backbone: alex-st" in report
    for name in names:
        assert sha256_file(out / "train" / name / "final.safetensors") in report
    for stage in result.done()[:-1]:
        assert f"| {stage} |" in report
    for rel in ("tables/paper-tables.md", "figures/" + result.figures[0].name, "run/run.json"):
        assert f"]({rel})" in report and (out / rel).is_file()


@pytest.mark.slow
def test_a_rerun_does_nothing_and_touches_no_file(first: tuple[Path, ReproduceResult], env: Path) -> None:
    out, _ = first
    before = _mtimes(out)
    lines: list[str] = []
    again = _run(out, lines)
    assert again.done() == []
    assert len(again.skipped()) == 9
    assert all("skipped" in line for line in lines if line.startswith("["))
    assert _mtimes(out) == before


@pytest.mark.slow
def test_changing_the_epochs_redoes_training_and_what_follows_but_not_the_data(
        first: tuple[Path, ReproduceResult], env: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(first[0], out)
    data_json = (out / "data" / "data.json").stat().st_mtime_ns
    again = _run(out, epochs=2)
    assert again.skipped() == ["data", "weights"]
    assert again.done() == [*(f"train/{n}" for n in _names()), "scoring", "tables", "figures", "report"]
    assert (out / "data" / "data.json").stat().st_mtime_ns == data_json
    for name in _names():
        assert (out / "train" / name / "epoch-002.safetensors").is_file()
    assert "2 epochs + 0 decay epochs" in again.report.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_corrupt_checkpoint_stops_its_training_stage_naming_the_file(
        first: tuple[Path, ReproduceResult], env: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(first[0], out)
    full = _names()[0]
    for name in ("epoch-001.safetensors", "final.safetensors"):
        (out / "train" / full / name).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsIntegrityError, match=rf"stage 'train/{full}' failed: .*epoch-001\.safetensors"):
        _run(out)
    book = json.loads((out / "stages.json").read_text(encoding="utf-8"))["stages"]
    assert book[f"train/{full}"]["status"] == "failed"
    assert book["data"]["status"] == "done"


# -- refusing before any work -----------------------------------------------------------------------------


def test_offline_with_bapps_missing_fails_before_any_work_naming_what_and_how(tmp_path: Path) -> None:
    root = tmp_path / "bapps"
    (root / "2afc" / "val" / "cnn").mkdir(parents=True)
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as info:
        reproduce(root, out, dataset="bapps", backbone="alex-st", offline=True, progress=False, log=lambda s: None)
    text = str(info.value)
    assert "2afc/train/traditional" in text and "jnd/val/cnn" in text and "2afc/val/cnn" not in text
    assert "spips-bench download bapps --split train" in text and "--split jnd" in text
    assert "--dataset demo" in text
    assert not out.exists()


def test_the_cli_reports_the_missing_data_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spips_bench.cli import main

    code = main(["reproduce", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--offline",
                 "--backbone", "alex-st"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("spips-bench reproduce: error:") and "--offline" in err[0]


def test_offline_a_trunk_that_is_absent_is_an_error_naming_the_offline_backbone(
        env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spips_bench import weights

    monkeypatch.setattr(weights, "is_present", lambda name: name.startswith("stlpips"))
    out = tmp_path / "out"
    with pytest.raises(WeightsUnavailableError, match="--backbone alex-st"):
        _run(out, backbone="vgg")
    assert not out.exists()


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--backbone 'resnet'.*alex-st"):
        reproduce(None, tmp_path, dataset="demo", backbone="resnet")
    with pytest.raises(ValueError, match="--dataset"):
        reproduce(None, tmp_path, dataset="tid2013")
    with pytest.raises(ValueError, match="--epochs 0"):
        reproduce(None, tmp_path, dataset="demo", epochs=0)
    assert not tmp_path.joinpath("stages.json").exists()


# -- the recipe and the stage record ----------------------------------------------------------------------


def test_every_backbone_has_three_variants_and_unregistered_ablations_are_built_from_streams() -> None:
    from spips_bench.registry import create_metric, get_spec
    from spips_bench.zoo.spips.model import BACKBONES

    recipe = load_recipe()
    assert set(recipe.backbones) == set(BACKBONES)
    for backbone in recipe.backbones:
        variants = recipe.variants(backbone)
        assert [v.role for v in variants] == list(ROLES)
        assert get_spec(variants[0].metric).options["backbone"] == backbone  # the full model is a card
    vgg = recipe.variants("vgg")
    assert [v.registered for v in vgg] == [True, False, False]
    register_variants(vgg)
    assert recipe.variants("vgg") == vgg  # registering does not change what the recipe resolves to
    spec = get_spec("spips-vgg-abla1")
    assert spec.options == {"backbone": "vgg", "streams": ["traditional", "perceptual"]}
    assert spec.ablation_of == "spips-vgg"
    with warnings.catch_warnings():  # untrained on purpose: only the options are checked
        warnings.simplefilter("ignore", UntrainedHeadsWarning)
        metric = create_metric("spips-vgg-abla2", pretrained=False)
    assert metric.streams == ("perceptual", "semantic") and metric.backbone == "vgg"


def test_the_recipe_names_the_paper_baselines_and_rows() -> None:
    recipe = load_recipe()
    assert len(recipe.baselines) == 5
    rows = recipe.paper_rows("alex")
    assert sorted(rows.values()) == ["SPIPS", "SPIPS-abla1", "SPIPS-abla2"]
    assert recipe.display("alex")["spips"] == "SPIPS (ours)"
    with pytest.raises(ValueError, match="missing field"):
        load_recipe("load_size = 64\n[baselines]\nmetrics = []\n")


def test_a_stage_is_current_only_while_its_digest_and_outputs_match(tmp_path: Path) -> None:
    book = StageBook(tmp_path)
    out = tmp_path / "a.txt"
    out.write_text("1", encoding="utf-8")
    key = digest({"x": 1})
    assert book.begin("s", key) is False
    book.finish("s", [out], 0.1, {})
    again = StageBook(tmp_path)
    assert again.current("s", key)
    assert not again.current("s", digest({"x": 2}))
    out.write_text("2", encoding="utf-8")
    assert not again.current("s", key)
    assert again.begin("s", digest({"x": 2})) is True
    (tmp_path / "stages.json").write_text("{", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"stages\.json"):
        StageBook(tmp_path)


def test_the_workflow_runs_reproduce_on_a_configurable_runner_and_uploads_its_reports() -> None:
    yaml = pytest.importorskip("yaml")
    path = Path(__file__).parents[1] / ".github" / "workflows" / "bapps-tables.yml"
    job = yaml.safe_load(path.read_text(encoding="utf-8"))["jobs"]["reproduce"]
    assert "vars.BAPPS_RUNNER" in job["runs-on"] and "ubuntu-latest" in job["runs-on"]
    steps = job["steps"]
    run = " ".join(str(s.get("run", "")) for s in steps)
    assert "spips-bench reproduce --root datasets/bapps --out runs/paper" in run and "--device auto" in run
    uploaded = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))["with"]["path"]
    for item in ("runs/paper/report.md", "runs/paper/tables/", "runs/paper/figures/", "runs/paper/run/run.json"):
        assert item in uploaded
