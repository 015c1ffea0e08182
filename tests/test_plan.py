"""What `spips-bench run` scores: the plan against the disk, the data it names, and the run fingerprint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from spips_bench import registry
from spips_bench.cli import main
from spips_bench.errors import DatasetError, RunConfigError
from spips_bench.run import record as run_record
from spips_bench.run import runner
from spips_bench.run.config import RunConfig
from spips_bench.run.runner import run_benchmark

N = 6  # samples per category: enough for a table, cheap to score with psnr


def _tree(demo: Path, root: Path, pairs: list[tuple[str, str]]) -> Path:
    """A BAPPS root holding the first N samples of the demo set's ``(kind, category)`` folders only."""
    for kind, category in pairs:
        src = demo / kind / "val" / category
        for part in sorted(p.name for p in src.iterdir()):
            (root / kind / "val" / category / part).mkdir(parents=True)
            for f in sorted((src / part).iterdir())[:N]:
                shutil.copy(f, root / kind / "val" / category / part / f.name)
    return root


def _run(root: Path, out: Path, *extra: str, metrics: str = "psnr") -> int:
    return main(["run", "--metrics", metrics, "--root", str(root), "--out", str(out), "--workers", "0",
                 "--bootstrap", "10", "--no-progress", *extra])


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


@pytest.fixture
def no_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the runner builds a metric (the plan must be refused before)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a metric was built before the plan was checked against the disk")

    monkeypatch.setattr(runner, "build_metrics", refuse)


# -- partial trees ---------------------------------------------------------------------------------------


def test_partial_tree_scores_what_is_present_and_names_the_rest(demo: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # What `download bapps --split 2afc-val` leaves, minus four 2AFC categories: 2afc/val/{cnn,color}.
    root = _tree(demo, tmp_path / "bapps", [("2afc", "cnn"), ("2afc", "color")])
    out = tmp_path / "run"
    assert _run(root, out) == 0
    err = capsys.readouterr().err
    absent = ["2afc/traditional", "2afc/superres", "2afc/deblur", "2afc/frameinterp", "jnd/traditional",
              "jnd/cnn"]
    [notice] = [line for line in err.splitlines() if line.startswith("NOTICE")]
    assert f"{root.resolve()} holds part of BAPPS val: {', '.join(absent)} absent and not scored" in notice
    assert "scoring the 2 categories present" in notice
    assert "spips-bench download bapps --split val" in notice and "2AFC val and JND" in notice
    record = _record(out)
    assert record["dataset"]["name"] == "bapps" and record["status"] == "complete"
    assert record["dataset"]["absent"] == sorted(absent)
    assert record["categories"] == {"2afc/cnn": N, "2afc/color": N}
    for name in ("tables.md", "tables.tex"):
        text = (out / name).read_text(encoding="utf-8")
        assert f"Not scored, absent from the data: {', '.join(sorted(absent))}." in text
        assert "BAPPS val" in text

    # The categories arrive later (a second download): a rerun into the folder adds them and the
    # footnote names only what is still absent.
    _tree(demo, root, [("jnd", "cnn")])
    assert _run(root, out, "--kinds", "jnd") == 0
    record = _record(out)
    assert record["dataset"]["absent"] == sorted(a for a in absent if a != "jnd/cnn")
    assert set(record["categories"]) == {"2afc/cnn", "2afc/color", "jnd/cnn"}
    assert "jnd/cnn" not in (out / "tables.md").read_text(encoding="utf-8").split("absent from the data")[1]


def test_categories_named_and_present_are_scored(demo: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # --categories naming exactly what is there: scored; the JND of cnn, not there, is named.
    root = _tree(demo, tmp_path / "bapps", [("2afc", "cnn"), ("2afc", "color")])
    out = tmp_path / "run"
    assert _run(root, out, "--categories", "cnn,color") == 0
    assert "jnd/cnn absent and not scored" in capsys.readouterr().err
    assert _record(out)["dataset"]["absent"] == ["jnd/cnn"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--categories", "cnn,superres"], r"lacks 2afc/superres \(asked for by --categories/--kinds"),
    (["--kinds", "jnd"], r"lacks jnd/traditional, jnd/cnn \(asked for by --categories/--kinds"),
    (["--categories", "cnn", "--kinds", "2afc,jnd"], r"lacks jnd/cnn \(asked for"),
    (["--strict"], r"lacks 2afc/traditional, .*jnd/cnn \(--strict makes an absent category an error"),
])
def test_absent_data_asked_for_is_an_error_before_any_metric_is_built(
        extra: list[str], message: str, demo: Path, tmp_path: Path, no_metrics: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    import re

    root = _tree(demo, tmp_path / "bapps", [("2afc", "cnn")])
    out = tmp_path / "run"
    assert _run(root, out, *extra) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "spips-bench download bapps --split val --root" in err and "Traceback" not in err
    assert not out.exists()


# -- which data: named roots, the demo marker, the environment ------------------------------------------


def test_a_named_root_without_bapps_is_an_error(demo: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "bapsp"
    typo.mkdir()
    out = tmp_path / "run"
    assert _run(typo, out) == 2
    err = capsys.readouterr().err
    assert f"{typo} (given by --root): no BAPPS val here" in err and "--dataset demo" in err
    assert not out.exists()
    # The same through the environment variable, for run as for the other commands.
    monkeypatch.setenv("SPIPS_BENCH_BAPPS", str(typo))
    with pytest.raises(DatasetError, match=r"given by \$SPIPS_BENCH_BAPPS"):
        run_benchmark(RunConfig(metrics=["psnr"], out=out, workers=0, progress=False, bootstrap=10))


def test_the_environment_root_is_read_by_run(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             ) -> None:
    root = _tree(demo, tmp_path / "bapps", [("2afc", "cnn")])
    monkeypatch.setenv("SPIPS_BENCH_BAPPS", str(root))
    result = run_benchmark(RunConfig(metrics=["psnr"], kinds=["2afc"], categories=["cnn"],
                                     out=tmp_path / "run", workers=0, progress=False, bootstrap=10))
    assert result.record["dataset"]["name"] == "bapps"
    assert result.record["dataset"]["root"] == str(root.resolve())


def test_the_default_root_without_bapps_falls_back_to_the_demo_set(demo: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./datasets/bapps here
    result = run_benchmark(RunConfig(metrics=["psnr"], kinds=["jnd"], categories=["cnn"],
                                     out=tmp_path / "run", workers=0, progress=False, bootstrap=10))
    assert result.record["dataset"]["synthetic_judgments"] is True


def test_the_demo_folder_as_bapps_root_is_labelled_synthetic(demo: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert _run(demo, out, "--dataset", "bapps", "--categories", "cnn", "--kinds", "jnd") == 0
    assert "is the spips-bench demo set, not BAPPS" in capsys.readouterr().err
    record = _record(out)
    assert record["dataset"]["name"] == "demo" and record["dataset"]["synthetic_judgments"] is True
    text = (out / "tables.md").read_text(encoding="utf-8")
    assert "Demo set (synthetic judgments)" in text and "BAPPS val" not in text


# -- the fingerprint: root, files, versions, code, format -----------------------------------------------


def test_another_root_is_refused(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _tree(demo, tmp_path / "a", [("2afc", "cnn")])
    b = tmp_path / "b"
    shutil.copytree(a, b)
    out = tmp_path / "run"
    assert _run(a, out, "--kinds", "2afc") == 0
    capsys.readouterr()
    assert _run(b, out, "--kinds", "2afc") == 2
    err = capsys.readouterr().err
    assert f"was written with root = '{a.resolve()}', this run has root = '{b.resolve()}'" in err
    assert "--overwrite" in err
    assert _record(out)["dataset"]["root"] == str(a.resolve())


def test_changed_files_are_refused_and_added_categories_allowed(demo: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(demo, tmp_path / "bapps", [("2afc", "cnn"), ("2afc", "color")])
    out = tmp_path / "run"
    assert _run(root, out, "--categories", "cnn", "--kinds", "2afc") == 0
    assert _run(root, out, "--categories", "color", "--kinds", "2afc") == 0  # a category more: fine
    assert set(_record(out)["fingerprint"]["data"]) == {"2afc/cnn", "2afc/color"}
    capsys.readouterr()
    png = root / "2afc" / "val" / "cnn" / "p0" / "000002.png"
    shutil.copy(root / "2afc" / "val" / "cnn" / "p1" / "000002.png", png)  # another image, another size
    assert _run(root, out, "--categories", "cnn,color", "--kinds", "2afc") == 2
    err = capsys.readouterr().err
    assert "the files of 2afc/cnn changed since they were scored" in err and "--overwrite" in err
    (root / "2afc" / "val" / "cnn" / "judge" / "000099.npy").write_bytes(b"")  # and a file more
    assert _run(root, out, "--categories", "cnn", "--kinds", "2afc") == 2
    assert f"{N * 4} files" in capsys.readouterr().err  # the stored count, then the new one
    # Only the category whose files changed is refused.
    assert _run(root, out, "--categories", "color", "--kinds", "2afc") == 0


@pytest.mark.parametrize("package", ["pillow", "numpy", "scipy", "piq", "torchvision"])
def test_a_changed_package_version_is_refused(package: str, demo: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = RunConfig(metrics=["psnr"], dataset="demo", kinds=["jnd"], categories=["cnn"],
                       out=tmp_path / "run", workers=0, progress=False, bootstrap=10)
    first = run_benchmark(config)
    assert first.record["fingerprint"]["global"][package] == first.record["versions"][package]
    real = run_record.package_versions()
    monkeypatch.setattr(runner, "package_versions", lambda: {**real, package: "0.0-other"})
    with pytest.raises(RunConfigError, match=rf"{package} = '{real[package]}', this run has {package} = "
                                             "'0.0-other'"):
        run_benchmark(config)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["versions"][package] == real[package]


def test_the_packages_shipping_weights_are_in_the_metric_fingerprint() -> None:
    from importlib import metadata

    assert run_record.weight_packages(["lpips-alex", "vgg16"]) == {"lpips": metadata.version("lpips")}
    assert "packages" in run_record.FINGERPRINT_KEYS


def test_the_scoring_code_covers_runner_store_registry_and_cards() -> None:
    root = Path(run_record.__file__).parents[1]
    files = {f.relative_to(root).as_posix() for f in run_record.scoring_code_files()}
    assert {"run/runner.py", "run/config.py", "run/store.py", "registry.py", "data/bapps.py", "data/images.py",
            "io.py", "validation.py", "weights.py", "metric.py", "cards/classical.toml", "zoo/psnr.py",
            "stats/kinds.py", "data/registry.py", "data/cards/bapps.toml"} <= files
    # reports are rebuilt from the store; the explanation figures never compute a stored score
    assert not files & {"run/record.py", "run/plan.py", "report/build.py", "report/tables.py",
                        "zoo/spips/explain.py"}


def test_a_folder_of_the_older_run_format_is_refused_with_the_way_out(demo: Path, tmp_path: Path) -> None:
    config = RunConfig(metrics=["psnr"], dataset="demo", kinds=["jnd"], categories=["cnn"],
                       out=tmp_path / "run", workers=0, progress=False, bootstrap=10)
    run_benchmark(config)
    run_json = tmp_path / "run" / "run.json"
    old = json.loads(run_json.read_text())
    old["format"] = "spips-bench-run/1"
    run_json.write_text(json.dumps(old))
    with pytest.raises(RunConfigError, match=r"written in run format 'spips-bench-run/1'; this spips-bench "
                                             r"writes 'spips-bench-run/2'.*--overwrite.*another --out"):
        run_benchmark(config)
    config.overwrite = True
    assert run_benchmark(config).record["format"] == run_record.RUN_FORMAT == "spips-bench-run/2"


# -- minimum sizes ---------------------------------------------------------------------------------------


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a dataset is opened."""
    import spips_bench.data.bapps as bapps

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("data was read")

    monkeypatch.setattr(bapps.TwoAFCDataset, "__init__", refuse)
    monkeypatch.setattr(bapps.JNDDataset, "__init__", refuse)


def test_a_named_metric_above_the_load_size_is_an_error_before_any_data_is_read(
        demo: Path, tmp_path: Path, no_data: None, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["run", "--metrics", "psnr,ssim", "--dataset", "demo", "--load-size", "8", "--out", str(out),
                 "--workers", "0", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert ("metric 'ssim' needs patches of at least 11x11 px, and --load-size 8 gives 8x8: pass --load-size 11 "
            "or more") in err
    assert not out.exists()


def test_under_all_a_metric_above_the_load_size_is_skipped_or_strict_refused(
        demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "list_metrics", lambda: ["psnr", "ssim"])
    config = RunConfig(metrics=["all"], dataset="demo", kinds=["jnd"], categories=["cnn"], load_size=8,
                       out=tmp_path / "run", workers=0, progress=False, bootstrap=10)
    result = run_benchmark(config)
    info = result.record["metrics"]["ssim"]
    assert info["status"] == "skipped" and "needs patches of at least 11x11 px" in info["reason"]
    assert result.record["metrics"]["psnr"]["status"] == "ok"
    assert not (tmp_path / "run" / "scores" / "jnd" / "cnn" / "ssim.csv").exists()
    assert "needs patches of at least 11x11 px" in (tmp_path / "run" / "tables.md").read_text(encoding="utf-8")
    config.strict = True
    with pytest.raises(RunConfigError, match="metric 'ssim' needs patches of at least 11x11"):
        run_benchmark(config)


def test_at_the_native_size_a_small_sample_names_metric_file_and_sample_and_can_be_skipped(
        demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    root = _tree(demo, tmp_path / "bapps", [("2afc", "cnn")])
    for part in ("ref", "p0", "p1"):  # one sample stored at 8x8 px: one size inside the triplet
        path = root / "2afc" / "val" / "cnn" / part / "000003.png"
        with Image.open(path) as im:
            im.resize((8, 8)).save(path)
    small = root.resolve() / "2afc" / "val" / "cnn" / "ref" / "000003.png"
    out = tmp_path / "run"
    args = ["--kinds", "2afc", "--categories", "cnn", "--load-size", "native", "--batch-size", "2"]
    assert _run(root, out, *args, metrics="psnr,ssim") == 2
    err = capsys.readouterr().err
    assert (f"{small}: 8x8 px, smaller than the 11x11 px that metric 'ssim' needs; pass a load size (e.g. "
            "--load-size 64) to resize every patch, or leave 'ssim' out of --metrics (2afc/cnn sample 000003)"
            ) in err
    assert "--on-error skip" in err and "Traceback" not in err
    assert _run(root, out, *args, "--on-error", "skip", metrics="psnr,ssim") == 0
    record = _record(out)
    assert [(e["sample"], e["file"]) for e in record["skipped"]] == [("000003", str(small))]
    assert "metric 'ssim'" in record["skipped"][0]["reason"]
    assert record["metrics"]["ssim"]["status"] == "ok"


def test_a_file_repaired_after_a_failed_run_is_resumed(demo: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(demo, tmp_path / "bapps", [("2afc", "cnn")])
    path = root / "2afc" / "val" / "cnn" / "p1" / "000004.png"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated: the run stops on it, naming the file
    out = tmp_path / "run"
    args = ["--kinds", "2afc", "--batch-size", "2"]
    assert _run(root, out, *args) == 2
    assert str(path.resolve()) in capsys.readouterr().err
    path.write_bytes(good)  # repaired: the category was never finished, so its new listing is taken
    assert _run(root, out, *args) == 0
    record = _record(out)
    assert record["status"] == "complete" and record["categories"] == {"2afc/cnn": N}
    assert record["fingerprint"]["data"]["2afc/cnn"]["files"] == 4 * N
