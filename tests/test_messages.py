"""What a newcomer reads: the install extra, missing-package lines, skipped-metric footnotes, device errors."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

from spips_bench.cli import main
from spips_bench.errors import DeviceError
from spips_bench.registry import ALL_EXTRA, DISTRIBUTIONS, get_spec, list_metrics
from spips_bench.validation import resolve_device

ROOT = Path(__file__).resolve().parents[1]
CALIB = Path(__file__).parent / "data" / "calibration"


def _hide(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *packages: str) -> None:
    """Make ``packages`` look uninstalled, with empty weight caches (so their wheels' files are missing)."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name.split(".")[0] in packages else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("SPIPS_BENCH_WEIGHTS", raising=False)


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]


# -- the install extra -------------------------------------------------------------------------------


def test_the_all_extra_installs_every_package_a_metric_uses_and_the_readme_uses_it() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"]
    in_all = {_requirement_name(r).lower() for r in extras[ALL_EXTRA]}
    used = {p for name in list_metrics() for p in get_spec(name).packages}
    assert used >= {"lpips", "DISTS_pytorch", "stlpips_pytorch"}
    assert used <= set(DISTRIBUTIONS), "every package a card or weight file names needs its pip name"
    assert {d.lower() for d in DISTRIBUTIONS.values()} <= in_all
    assert f"spips-bench[{ALL_EXTRA}]" in extras["test"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    main_command = next(line for line in readme.splitlines() if "spips-bench run --metrics all" in line)
    assert f"-e '.[{ALL_EXTRA}]'" in main_command


def test_packages_that_ship_weight_files_are_derived_from_the_weights() -> None:
    assert get_spec("stlpips").packages == ("stlpips_pytorch",)
    assert get_spec("spips-alex-st-abla1").packages == ("stlpips_pytorch",)
    assert get_spec("lpips-vgg").packages == ("lpips",)
    assert get_spec("dists").packages == ("DISTS_pytorch",)
    assert get_spec("spips").packages == () and get_spec("psnr").packages == ()
    assert get_spec("stlpips").requires == ()  # derived, not listed twice


# -- a missing package in list, weights and the skip reason ---------------------------------------------


def test_list_names_a_missing_package_with_its_install_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    installed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert installed["stlpips"].endswith("stlpips-pytorch (installed)")
    _hide(monkeypatch, tmp_path, "stlpips_pytorch")
    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    for name in ("stlpips", "stlpips-vgg", "spips-alex-st", "spips-vgg-st"):
        assert lines[name].endswith("stlpips-pytorch (missing: pip install stlpips-pytorch)"), lines[name]
    assert lines["spips"].endswith("-")
    assert get_spec("stlpips").unavailable_reason() == (
        "needs package stlpips-pytorch, not installed: `pip install stlpips-pytorch`")
    # With the weight file in $SPIPS_BENCH_WEIGHTS the package is not needed, and list says why.
    from spips_bench.weights import WEIGHTS

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / WEIGHTS["stlpips-alex"].filename).write_bytes(b"")  # list only looks for the file
    monkeypatch.setenv("SPIPS_BENCH_WEIGHTS", str(tmp_path / "w"))
    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert lines["stlpips"].endswith("stlpips-pytorch (not installed; its weight files are found elsewhere)")
    assert lines["stlpips-vgg"].endswith("stlpips-pytorch (missing: pip install stlpips-pytorch)")
    assert get_spec("stlpips").unavailable_reason() is None


def test_weights_names_the_package_that_ships_a_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _hide(monkeypatch, tmp_path, "stlpips_pytorch", "lpips")
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["stlpips-alex"].startswith("stlpips-alex   missing")
    assert lines["stlpips-alex"].endswith("stlpips-pytorch (missing: pip install stlpips-pytorch)")
    assert lines["lpips-vgg"].endswith("lpips (missing: pip install lpips)")
    assert lines["alexnet"].endswith("-")
    assert "`pip install lpips stlpips-pytorch`" in out


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from spips_bench.data.demo import DEMO_VERSION, ensure_demo

    cache = tmp_path_factory.getbasetemp() / "spips-bench-cache"
    ensure_demo(cache / f"demo-v{DEMO_VERSION}")  # shared with the other test files of this run
    monkeypatch.setenv("SPIPS_BENCH_CACHE", str(cache))


def test_skipped_metrics_get_one_short_footnote_per_group_and_their_details_once(
        demo: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    _hide(monkeypatch, tmp_path, "stlpips_pytorch")
    out = tmp_path / "run"
    code = main(["run", "--metrics", "psnr,stlpips,spips-alex-st,spips,lpips,spips-abla1", "--dataset", "demo",
                 "--categories", "cnn", "--kinds", "2afc", "--out", str(out), "--workers", "0", "--no-progress",
                 "--bootstrap", "10"])
    assert code == 0
    err = capsys.readouterr().err
    assert "not run: stlpips, spips-alex-st: needs package stlpips-pytorch, not installed: " \
           "`pip install stlpips-pytorch`" in err.splitlines()
    assert "not run: spips, lpips, spips-abla1: weight file alexnet not on this machine: " \
           "`spips-bench weights fetch alexnet` where there is network" in err.splitlines()
    # The details (URL, SHA-256, where to put the file) are printed once per weight file, not per metric.
    assert err.count("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth") == 1
    md = (out / "tables.md").read_text(encoding="utf-8")
    notes = [line for line in md.splitlines() if line.startswith("- Not run")]
    assert notes == [
        "- Not run: stlpips, spips-alex-st (needs package stlpips-pytorch, not installed: "
        "`pip install stlpips-pytorch`; details in run.json).",
        "- Not run: spips, lpips, spips-abla1 (weight file alexnet not on this machine: "
        "`spips-bench weights fetch alexnet` where there is network; details in run.json).",
    ]
    assert "http" not in md and str(tmp_path) not in md
    tex = (out / "tables.tex").read_text(encoding="utf-8")
    assert "\\item Not run: stlpips, spips-alex-st (needs package stlpips-pytorch, not installed: " \
           "\\texttt{pip install stlpips-pytorch}; details in run.json)." in tex
    assert "http" not in tex and "`" not in tex
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert "alexnet-owt-7be5be79.pth" in record["metrics"]["lpips"]["reason"]  # the details stay in run.json
    assert record["metrics"]["stlpips"]["note"].endswith("`pip install stlpips-pytorch`")


# -- devices ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "message"), [
    ("gpu", r"--device 'gpu' is not a device name; torch calls a GPU 'cuda'\. Use auto, cpu, cuda or cuda:N"),
    ("foo", r"--device 'foo' is not a device name\. Use auto, cpu, cuda or cuda:N"),
    ("cuda:x", r"--device 'cuda:x' is not a device name"),
    ("cpu:0", r"--device 'cpu:0' is not a device name"),
])
def test_a_device_that_is_not_a_name_is_refused(requested: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        resolve_device(requested)


def test_cuda_without_a_gpu_and_a_gpu_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"--device cuda: no CUDA device here \(.*\)\. Use --device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def _pair() -> tuple[str, str]:
    return str(next((CALIB / "ref").glob("I03.*"))), str(next((CALIB / "dist").glob("I03.*")))


@pytest.mark.parametrize("command", ["score", "explain", "run", "train", "bench"])
@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_every_command_refuses_a_bad_device_in_one_line(command: str, device: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ref, dist = _pair()
    argv = {
        "score": ["score", ref, dist, "--metrics", "psnr"],
        "explain": ["explain", ref, dist, "--metric", "spips-alex-st", "--out", str(tmp_path / "f.png")],
        "run": ["run", "--metrics", "psnr", "--dataset", "demo", "--out", str(tmp_path / "run")],
        "train": ["train", "--metric", "spips-alex-st", "--dataset", "demo", "--out", str(tmp_path / "train")],
        "bench": ["bench", "--quick", "--out", str(tmp_path / "bench")],
    }[command]
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    expected = "torch calls a GPU 'cuda'" if device == "gpu" else "--device cuda: no CUDA device here"
    assert f"spips-bench {command}: error: " in err and expected in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "train").exists()


def test_explain_refuses_a_metric_without_streams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, dist = _pair()
    assert main(["explain", ref, dist, "--metric", "psnr", "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert "--metric psnr: explain draws the quality maps of SPIPS's streams, and psnr is not a SPIPS variant. " \
           "Use one of: spips, spips-abla1," in err
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("command", ["score", "explain"])
def test_a_folder_given_as_an_image_is_named_as_a_folder(command: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, dist = _pair()
    folder = CALIB / "ref"
    argv = ["score", str(folder), dist] if command == "score" else [
        "explain", str(folder), dist, "--metric", "spips-alex-st", "--out", str(tmp_path / "f.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{folder}: is a folder, not an image file" in err and "corrupt" not in err
