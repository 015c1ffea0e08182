"""Reliability matrix: bad inputs, interrupted runs and untrusted files, one test per case.

docs/reliability.md maps every case to its behaviour and to the test that shows it (some cases are
covered by tests of other files, named there). The runs here score PSNR (and SSIM) on small copies of
the demo set, so expected values come from scikit-image and from the 2AFC formula applied by hand.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import spips_bench.run.runner as evaluate_module
from spips_bench import registry, weights
from spips_bench.cli import main
from spips_bench.errors import StoreWriteError
from spips_bench.metric import Metric
from spips_bench.run.config import RunConfig
from spips_bench.run.runner import run_benchmark
from spips_bench.run.store import read_table

N = 12  # samples per category in the small BAPPS copies
BATCH = 4


# -- data -------------------------------------------------------------------------------------------------


@pytest.fixture
def bapps(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path) -> Path:
    """A BAPPS root with the first N samples of the demo's 2AFC val cnn and JND val cnn, to be damaged."""
    return demo_cnn_copy(tmp_path / "bapps", N)


def _names(n: int = N) -> list[str]:
    return [f"{i:06d}" for i in range(n)]


def _cli(root: Path, out: Path, *extra: str, kind: str = "2afc") -> int:
    return main(["run", "--metrics", "psnr", "--dataset", "bapps", "--root", str(root), "--categories", "cnn",
                 "--kinds", kind, "--out", str(out), "--workers", "0", "--batch-size", str(BATCH),
                 "--bootstrap", "10", "--no-progress", *extra])


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def _summary(out: Path) -> dict[tuple[str, str, str, str], tuple[float, int]]:
    lines = (out / "summary.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",") == ["kind", "category", "metric", "statistic", "value", "ci_low", "ci_high", "n"]
    rows = [line.split(",") for line in lines[1:]]
    return {(r[0], r[1], r[2], r[3]): (float(r[4]), int(r[7])) for r in rows}


def _two_afc_by_hand(out: Path, metric: str = "psnr", higher_is_better: bool = True) -> tuple[float, int]:
    """The protocol's 2AFC score over the samples with a stored judgment and no NaN score (an infinite
    score is an ordered value, as in the official code)."""
    judge = read_table(out / "judgments" / "2afc" / "cnn.csv", ("judge",))
    scores = read_table(out / "scores" / "2afc" / "cnn" / f"{metric}.csv", ("d0", "d1"))
    keep = [s for s in sorted(judge) if not np.isnan(scores[s]).any()]
    d = np.array([scores[s] for s in keep])
    h = np.array([judge[s][0] for s in keep])
    d0, d1 = (d[:, 0], d[:, 1]) if not higher_is_better else (-d[:, 0], -d[:, 1])
    value = np.mean((d0 < d1) * (1 - h) + (d1 < d0) * h + (d0 == d1) * 0.5)
    return float(value), len(keep)


def _store_files(out: Path) -> dict[str, bytes]:
    """Store and report files of a run folder (run.json holds times, .lock a pid)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("run.json", ".lock")}


# -- one bad sample: fail names it, skip leaves it out --------------------------------------------------------


def _bad_sample_case(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *, sample: str,
                     file: Path, reason: str, kind: str = "2afc", stored_before: list[str] | None = None,
                     total: int = N, fail_names: Path | None = None) -> dict[str, Any]:
    """Run with --on-error fail (error names file and problem), then skip into the same folder.

    ``stored_before``: the samples the failed run must have stored (None: it fails before scoring).
    ``fail_names``: what the failure must name, when not ``file`` (unpaired names: the folder).
    Returns the run.json of the skip run, after checking that the sample is absent from the store,
    listed in run.json, footnoted in both tables and left out of the statistics.
    """
    import re

    out = tmp_path / "run"
    assert _cli(root, out, kind=kind) == 2
    err = capsys.readouterr().err
    assert str(fail_names or file) in err and re.search(reason, err), err
    assert "--on-error skip" in err and "Traceback" not in err
    judgments = out / "judgments" / kind / "cnn.csv"
    if stored_before is None:
        assert not judgments.exists()
    else:
        assert sorted(read_table(judgments, ("judge" if kind == "2afc" else "same",))) == stored_before
        failed = _record(out)
        assert failed["status"] == "failed" and str(file) in failed["error"]
    before = read_table(out / "scores" / kind / "cnn" / "psnr.csv", ("d0", "d1") if kind == "2afc" else ("d",))

    assert _cli(root, out, "--on-error", "skip", kind=kind) == 0  # resumes the failed run
    err = capsys.readouterr().err
    assert f"skipped {kind}/cnn sample {sample}" in err
    record = _record(out)
    assert record["status"] == "complete" and record["arguments"]["on_error"] == "skip"
    [entry] = record["skipped"]
    assert {k: entry[k] for k in ("kind", "category", "sample", "file")} == {
        "kind": kind, "category": "cnn", "sample": sample, "file": str(file)}
    assert re.search(reason, entry["reason"]), entry["reason"]
    assert record["categories"] == {f"{kind}/cnn": total}
    columns = ("d0", "d1") if kind == "2afc" else ("d",)
    scores = read_table(out / "scores" / kind / "cnn" / "psnr.csv", columns)
    assert sample not in scores and len(scores) == total - 1
    assert sample not in read_table(judgments, ("judge" if kind == "2afc" else "same",))
    assert all(scores[s] == v for s, v in before.items())  # what the failed run stored was kept
    stat = "2afc_score" if kind == "2afc" else "jnd_map"
    value, n = _summary(out)[(kind, "cnn", "psnr", stat)]
    assert n == total - 1
    if kind == "2afc":
        assert value == pytest.approx(_two_afc_by_hand(out)[0], abs=1e-12)
    for name in ("tables.md", "tables.tex"):
        text = (out / name).read_text(encoding="utf-8")
        assert f"1 sample(s) skipped (on-error policy: skip): 1 in {kind}/cnn." in text
    return record


def _damage(root: Path, part: str, sample: str, content: bytes | Callable[[Path], None],
            kind: str = "2afc") -> Path:
    suffix = ".npy" if part in ("judge", "same") else ".png"
    path = root / kind / "val" / "cnn" / part / f"{sample}{suffix}"
    if callable(content):
        content(path)
    else:
        path.write_bytes(content)
    return path


def test_truncated_png(bapps: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = bapps / "2afc" / "val" / "cnn" / "p0" / "000009.png"
    path = _damage(bapps, "p0", "000009", target.read_bytes()[:200])
    _bad_sample_case(bapps, tmp_path, capsys, sample="000009", file=path, reason="corrupt or truncated image",
                     stored_before=_names(8))


def test_corrupt_png_with_workers(bapps: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Flipped bytes inside the image data: the PNG checksum fails. Decoded in a DataLoader worker,
    # the error must still reach the user as one line naming the file.
    target = bapps / "2afc" / "val" / "cnn" / "ref" / "000002.png"
    data = bytearray(target.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
    _damage(bapps, "ref", "000002", bytes(data))
    assert _cli(bapps, tmp_path / "run", "--workers", "1") == 2
    err = capsys.readouterr().err
    assert f"{target}: corrupt or truncated image" in err and "Traceback" not in err
    assert "DataLoader worker" not in err and len(err.strip().splitlines()) == 1


def test_zero_byte_file(bapps: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _damage(bapps, "ref", "000004", b"")
    _bad_sample_case(bapps, tmp_path, capsys, sample="000004", file=path, reason=r"the file is empty \(0 bytes\)",
                     stored_before=_names(4))


def test_non_image_file(bapps: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _damage(bapps, "p1", "000000", b"<html>an error page saved as png</html>\n")
    _bad_sample_case(bapps, tmp_path, capsys, sample="000000", file=path,
                     reason="not an image file Pillow can read", stored_before=[])


def test_unreadable_permissions(bapps: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = bapps / "2afc" / "val" / "cnn" / "p1" / "000005.png"
    if os.geteuid() == 0:
        # chmod does not stop root from reading: refuse the open as the kernel would for another user.
        import builtins

        real_open = builtins.open

        def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, (str, os.PathLike)) and Path(file) == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
    else:
        path.chmod(0)
    _bad_sample_case(bapps, tmp_path, capsys, sample="000005", file=path, reason="permission denied",
                     stored_before=_names(4))


@pytest.mark.parametrize("kind", ["2afc", "jnd"])
def test_missing_judgment_file(kind: str, bapps: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    part = "judge" if kind == "2afc" else "same"
    missing = bapps / kind / "val" / "cnn" / part / "000006.npy"
    missing.unlink()
    present = bapps / kind / "val" / "cnn" / ("ref" if kind == "2afc" else "p0") / "000006.png"
    # fail: refused before anything is scored, naming the folder and the name; skip: the sample only,
    # listed under its first file, the reason naming the missing one.
    _bad_sample_case(bapps, tmp_path, capsys, sample="000006", file=present, kind=kind,
                     fail_names=missing.parent,
                     reason=rf"{part} lacks 1 name\(s\).*000006|unpaired: no {missing}")


def test_extra_unpaired_file(bapps: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = bapps / "2afc" / "val" / "cnn" / "p0" / "000999.png"
    shutil.copy(bapps / "2afc" / "val" / "cnn" / "p0" / "000001.png", extra)
    _bad_sample_case(bapps, tmp_path, capsys, sample="000999", file=extra, total=N + 1,
                     fail_names=extra.parent.with_name("ref"),
                     reason=r"ref lacks 1 name\(s\).*000999|unpaired: no .*ref.000999\.png")


@pytest.mark.parametrize("value", [float("nan"), 1.5, -0.2])
def test_judgment_nan_or_outside_unit_interval(value: float, bapps: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = _damage(bapps, "judge", "000010", lambda p: np.save(p, np.array([value], dtype=np.float32)))
    record = _bad_sample_case(bapps, tmp_path, capsys, sample="000010", file=path,
                              reason=r"is not a finite fraction in \[0, 1\]", stored_before=_names(8))
    assert str(np.float32(value)) in record["skipped"][0]["reason"] or np.isnan(value)


def test_size_mismatch_inside_a_triplet_at_native_size(bapps: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = bapps / "2afc" / "val" / "cnn" / "p1" / "000003.png"
    with Image.open(path) as im:
        im.resize((32, 32), Image.BILINEAR).save(path)
    # At --load-size 64 every image is resized: the run completes with all samples.
    assert _cli(bapps, tmp_path / "at64") == 0
    assert _record(tmp_path / "at64")["skipped"] == []
    assert len(read_table(tmp_path / "at64" / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))) == N
    capsys.readouterr()
    # At the native size the triplet cannot be compared.
    out = tmp_path / "native"
    assert _cli(bapps, out, "--load-size", "native") == 2
    err = capsys.readouterr().err
    assert f"{path}: 32x32 px, but ref/000003.png is 64x64 px" in err and "--load-size 64" in err
    assert _cli(bapps, out, "--load-size", "native", "--on-error", "skip") == 0
    [entry] = _record(out)["skipped"]
    assert entry["sample"] == "000003" and entry["file"] == str(path) and "32x32 px" in entry["reason"]
    assert _summary(out)[("2afc", "cnn", "psnr", "2afc_score")][1] == N - 1


def test_a_failed_sample_is_retried_and_never_silently_accepted(demo: Path, bapps: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _damage(bapps, "ref", "000007", b"")
    out = tmp_path / "run"
    assert _cli(bapps, out, "--on-error", "skip") == 0
    # A later run with the default policy meets the same sample again and stops: a hole in the store is
    # never taken as finished.
    assert _cli(bapps, out) == 2 and str(path) in capsys.readouterr().err
    # Repaired, the sample is scored on the next run and drops out of the skipped list.
    shutil.copy(demo / "2afc" / "val" / "cnn" / "ref" / "000007.png", path)
    assert _cli(bapps, out, "--on-error", "skip") == 0
    record = _record(out)
    assert record["skipped"] == [] and _summary(out)[("2afc", "cnn", "psnr", "2afc_score")][1] == N
    assert "skipped" not in (out / "tables.md").read_text(encoding="utf-8").split("Notes:")[1].split("psnr")[0]


# -- converted images -----------------------------------------------------------------------------------------


def test_grayscale_rgba_and_16_bit_are_converted_and_recorded(bapps: Path, tmp_path: Path) -> None:
    from skimage.metrics import peak_signal_noise_ratio

    folder = bapps / "2afc" / "val" / "cnn"

    def rgb(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float64)

    gray = rgb(folder / "ref" / "000001.png").mean(axis=2)
    Image.fromarray(np.round(gray).astype(np.uint8), "L").save(folder / "ref" / "000001.png")
    p0 = rgb(folder / "p0" / "000002.png").astype(np.uint8)
    Image.fromarray(np.dstack([p0, np.full(p0.shape[:2], 90, np.uint8)]), "RGBA").save(folder / "p0" / "000002.png")
    p1 = rgb(folder / "p1" / "000003.png").mean(axis=2)
    Image.fromarray(np.round(p1 * 257).astype(np.uint16)).save(folder / "p1" / "000003.png")  # 16-bit gray
    out = tmp_path / "run"
    assert _cli(bapps, out, "--load-size", "native") == 0
    conversions = _record(out)["conversions"]
    assert set(conversions) == {"2afc/cnn"}
    assert {k.split(" (")[0]: v for k, v in conversions["2afc/cnn"].items()} == {
        "ref: L->RGB": 1, "p0: RGBA->RGB": 1, "p1: I;16->RGB": 1}
    scores = read_table(out / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))
    # Each converted image is scored as its RGB rendering: gray replicated, alpha dropped, 16-bit at full
    # precision.
    ref1 = np.repeat(np.round(gray)[..., None], 3, axis=2)
    assert scores["000001"][0] == pytest.approx(
        peak_signal_noise_ratio(ref1, rgb(folder / "p0" / "000001.png"), data_range=255), abs=1e-3)
    assert scores["000002"][0] == pytest.approx(
        peak_signal_noise_ratio(rgb(folder / "ref" / "000002.png"), p0.astype(np.float64), data_range=255),
        abs=1e-3)
    p1_16bit = np.repeat((np.round(p1 * 257) / 257)[..., None], 3, axis=2)  # v / 65535 * 255 = v / 257
    assert scores["000003"][1] == pytest.approx(
        peak_signal_noise_ratio(rgb(folder / "ref" / "000003.png"), p1_16bit, data_range=255), abs=1e-3)


# -- a metric that returns NaN/Inf ----------------------------------------------------------------------------


class NaNForOddSamples(Metric):
    """Mean absolute difference, but NaN for the 2nd and +Inf for the 4th pair of every batch."""

    name = "t-nan"
    higher_is_better = False

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        out = (dist - ref).abs().mean(dim=(1, 2, 3))
        if out.shape[0] > 1:
            out[1] = float("nan")
        if out.shape[0] > 3:
            out[3] = float("inf")
        return out


@pytest.fixture
def zoo(monkeypatch: pytest.MonkeyPatch) -> registry.Registry:
    reg = registry.Registry()  # the built-ins load on first use, as in the process-wide registry
    reg.register_class(NaNForOddSamples, source="test")
    monkeypatch.setattr(registry, "REGISTRY", reg)
    return reg


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_metric_returning_nan_or_inf(policy: str, zoo: registry.Registry, bapps: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["run", "--metrics", "t-nan,psnr", "--dataset", "bapps", "--root", str(bapps), "--categories",
                 "cnn", "--kinds", "2afc", "--out", str(out), "--workers", "0", "--batch-size", str(BATCH),
                 "--bootstrap", "10", "--no-progress", "--on-error", policy])
    assert code == 0
    assert f"{2 * N // BATCH} NaN score(s) stored as nan" in capsys.readouterr().err
    nan = sorted(f"{b + 1:06d}" for b in range(0, N, BATCH))
    inf = sorted(f"{b + 3:06d}" for b in range(0, N, BATCH))
    stored = read_table(out / "scores" / "2afc" / "cnn" / "t-nan.csv", ("d0", "d1"))
    assert sorted(s for s, v in stored.items() if np.isnan(v).all()) == nan  # both d0 and d1 per sample
    assert sorted(s for s, v in stored.items() if np.isposinf(v).all()) == inf  # stored as inf
    record = _record(out)
    assert record["skipped"] == []  # the sample's files are fine: it is not a skipped sample
    assert sorted({e["sample"] for e in record["nonfinite"] if e["value"] == "nan"}) == nan
    assert sorted({e["sample"] for e in record["nonfinite"] if e["value"] == "inf"}) == inf
    value, n = _summary(out)[("2afc", "cnn", "t-nan", "2afc_score")]
    expected, kept = _two_afc_by_hand(out, "t-nan", higher_is_better=False)
    assert n == kept == N - len(nan) and value == pytest.approx(expected, abs=1e-12)
    assert _summary(out)[("2afc", "cnn", "psnr", "2afc_score")][1] == N  # other metrics keep every sample
    tex = (out / "tables.tex").read_text(encoding="utf-8")
    assert "t-nan: NaN scores excluded" in tex and "t-nan: infinite scores (3 of 12 in 2afc/cnn" in tex


# -- the run folder: full disk, not writable, two runs at once ------------------------------------------------


def _config(root: Path, out: Path, **kw: Any) -> RunConfig:
    base: dict[str, Any] = {"dataset": "bapps", "root": root, "categories": ["cnn"], "kinds": ["2afc"],
                            "out": out, "workers": 0, "bootstrap": 10, "progress": False,
                            "batch_size": BATCH}
    base.update(kw)
    return RunConfig(metrics=["psnr", "ssim"], **base)


def test_full_disk_mid_run(bapps: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    import spips_bench.io as io_module

    run_benchmark(_config(bapps, tmp_path / "whole"))
    out = tmp_path / "run"
    real_mkstemp = tempfile.mkstemp
    writes: list[str] = []

    def full_after_first_chunk(*args: Any, **kwargs: Any) -> Any:
        folder = Path(kwargs["dir"])
        if (out / "scores") in (folder, *folder.parents):
            writes.append(kwargs["prefix"])
            if len(writes) > 2:  # psnr and ssim of the first chunk are written, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(io_module.tempfile, "mkstemp", full_after_first_chunk)
    with pytest.raises(StoreWriteError, match=r"psnr\.csv: cannot write \(No space left on device\); the "
                                              r"disk is full: free some space.*rerun the same command"):
        run_benchmark(_config(bapps, out, flush_every=1))
    # The first chunk is intact (scores and judgments of 4 samples), and no temporary file is left.
    assert sorted(read_table(out / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))) == _names(4)
    assert sorted(read_table(out / "judgments" / "2afc" / "cnn.csv", ("judge",))) == _names(4)
    assert not [p for p in out.rglob("*.tmp")]
    # The command line reports it in one line; the earlier run.json stays readable.
    assert _cli(bapps, out, "--metrics", "psnr,ssim") == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    failed = _record(out)
    assert failed["status"] == "failed" and "No space left on device" in failed["error"]
    monkeypatch.undo()
    run_benchmark(_config(bapps, out, flush_every=1))  # disk freed: the rerun resumes
    assert _store_files(out) == _store_files(tmp_path / "whole")


def test_output_folder_not_writable(bapps: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import spips_bench.io as io_module
    import spips_bench.run.store as store_module

    out = tmp_path / "readonly" / "run"
    out.mkdir(parents=True)
    if os.geteuid() == 0:
        # Root writes through chmod: refuse every file creation in the folder as the kernel would.
        def denied(*args: Any, **kwargs: Any) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied", str(args[0]) if args else "")

        monkeypatch.setattr(store_module, "open", denied, raising=False)
        monkeypatch.setattr(io_module.tempfile, "mkstemp", denied)
    else:
        out.chmod(0o555)
    assert _cli(bapps, out) == 2
    err = capsys.readouterr().err
    assert (f"{out / '.lock'}: cannot write (Permission denied); the folder is read-only or not writable: "
            "make it writable") in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == []


_CHILD = textwrap.dedent("""
    # `spips-bench run` with a hook that, after the first flush of the store, prints one line and waits
    # for a signal: the parent then has a run that is known to be mid-way.
    import signal, sys

    import spips_bench.run.runner as evaluate

    plain = evaluate.run_benchmark

    def run_benchmark(config, hook=None):
        def pause(kind, category, flushed):
            print(f"flushed {kind}/{category}/{flushed}", flush=True)
            while True:
                signal.pause()
        config.flush_every = 2
        return plain(config, hook=pause)

    evaluate.run_benchmark = run_benchmark
    from spips_bench.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _demo_args(out: Path, workers: int = 0) -> list[str]:
    return ["run", "--metrics", "psnr", "--dataset", "demo", "--categories", "cnn", "--out", str(out),
            "--workers", str(workers), "--batch-size", "8", "--bootstrap", "20", "--no-progress"]


def _start_paused(tmp_path: Path, demo_cache: Path, out: Path, workers: int = 0) -> subprocess.Popen[bytes]:
    """A child run that has flushed its first chunk and waits for a signal (its line is the event)."""
    script = tmp_path / "child.py"
    script.write_text(_CHILD, encoding="utf-8")
    env = {**os.environ, "SPIPS_BENCH_CACHE": str(demo_cache), "SPIPS_BENCH_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(script), *_demo_args(out, workers)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    line = child.stdout.readline().decode()  # blocks until the hook prints, or the child ends
    if line != "flushed 2afc/cnn/2\n":
        child.kill()
        raise AssertionError(f"the child run never flushed ({line!r}): {child.communicate()[1].decode()}")
    return child


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGINT, 0), (signal.SIGTERM, 0), (signal.SIGHUP, 0),
                                              (signal.SIGKILL, 0), (signal.SIGKILL, 2)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL", "SIGKILL-workers"])
def test_signal_mid_run_then_rerun_equals_an_uninterrupted_run(sig: signal.Signals, workers: int, demo: Path,
                                                               demo_cache: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    child = _start_paused(tmp_path, demo_cache, out, workers)
    try:
        child.send_signal(sig)
        child.wait()  # the run's own process; orphaned DataLoader workers may still be winding down
        if sig == signal.SIGKILL:
            assert child.returncode == -signal.SIGKILL
            assert _record(out)["status"] == "running"  # nobody could write the end; the store is still whole
            # What a kill in the middle of a write leaves: a temporary file beside the complete old version.
            (out / "scores" / "2afc" / "cnn" / ".psnr.csv.k1ll3d.tmp").write_text("sample,d0,d1\n0000")
        # Exactly the first chunk (2 batches of 8) is stored, in whole files.
        assert sorted(read_table(out / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))) == _names(16)
        assert not (out / "scores" / "jnd").exists()
        assert not (out / "summary.csv").exists()
        # The same command resumes at once: the lock went with the killed process, not with its workers.
        assert main(_demo_args(out, workers)) == 0, capsys.readouterr().err
    finally:
        child.kill()
        _, stderr = child.communicate()
    if sig != signal.SIGKILL:
        assert child.returncode == (130 if sig == signal.SIGINT else 128 + sig), stderr.decode()
        assert b"rerun the same command to resume" in stderr
        assert b"Traceback" not in stderr
    assert main(_demo_args(tmp_path / "whole")) == 0
    assert _store_files(out) == _store_files(tmp_path / "whole")
    assert _record(out)["status"] == "complete"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_stop_signal_stores_the_batches_since_the_last_flush(sig: signal.Signals, demo: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM/SIGHUP get SIGINT's handling: the batches scored since the last flush are stored too."""
    from spips_bench.cli.run import StopSignal, _stop_signals

    out = tmp_path / "run"
    config = RunConfig(metrics=["psnr"], dataset="demo", categories=["cnn"], kinds=["2afc"], out=out, workers=0,
                       bootstrap=0, progress=False, batch_size=8, flush_every=100)
    seen: list[int] = []
    real = evaluate_module.score_batch

    def signalling(kind: str, metric: Any, batch: dict[str, Any]) -> list[Any]:
        seen.append(batch["ref"].shape[0])
        if len(seen) == 3:  # two batches scored, none flushed yet (flush_every=100)
            os.kill(os.getpid(), sig)
        return real(kind, metric, batch)

    monkeypatch.setattr(evaluate_module, "score_batch", signalling)
    before = signal.getsignal(sig)
    with _stop_signals() as caught, pytest.raises(StopSignal):
        run_benchmark(config)
    assert caught == [sig]
    assert signal.getsignal(sig) is before  # the handlers are restored after the run
    record = _record(out)
    assert record["status"] == "interrupted" and record["signal"] == sig.name
    # The signal arrived as the third batch began: the two before it are stored, none of the third.
    assert sorted(read_table(out / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))) == _names(16)
    assert sorted(read_table(out / "judgments" / "2afc" / "cnn.csv", ("judge",))) == _names(16)


@pytest.mark.slow
def test_two_runs_on_one_out_folder(demo: Path, demo_cache: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    child = _start_paused(tmp_path, demo_cache, out)
    try:
        before = _store_files(out)
        assert main(_demo_args(out)) == 2
        err = capsys.readouterr().err
        assert f"in use by another spips-bench run (pid {child.pid} holds the lock {out / '.lock'})" in err
        assert _store_files(out) == before  # the refused run wrote nothing
    finally:
        child.send_signal(signal.SIGINT)
        child.communicate()
    assert child.returncode == 130
    assert main(_demo_args(out)) == 0  # once the first run is gone, the folder is free again


# -- untrusted weights and checkpoints ------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a marker file: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def _poisoned(path: Path, marker: Path) -> Path:
    torch.save({"lin0.weight": torch.zeros(1), "x": _Payload(marker)}, path)
    probe = path.with_name("probe")
    pickle.loads(pickle.dumps(_Payload(probe)))  # the payload is live: a plain unpickler runs it
    assert probe.exists() and not marker.exists()
    return path


def test_checkpoint_with_a_pickle_payload(demo: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "payload-ran"
    ckpt = _poisoned(tmp_path / "evil.pt", marker)
    out = tmp_path / "run"
    code = main(["run", "--metrics", "spips-alex-st", "--checkpoint", str(ckpt), "--dataset", "demo",
                 "--categories", "cnn", "--out", str(out), "--workers", "0", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "refused" in err
    assert not marker.exists()
    assert not (out / "scores").exists()


class NeedsPoisonedWeights(Metric):
    name = "t-poisoned"
    weights = ("t-poisoned-file",)

    def __init__(self) -> None:
        super().__init__()
        self.state = weights.load_state_dict("t-poisoned-file")

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return (dist - ref).abs().mean(dim=(1, 2, 3))


def test_weights_file_with_a_pickle_payload(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            zoo: registry.Registry, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "weights"
    folder.mkdir()
    evil = _poisoned(folder / "t-poisoned-file.pth", marker)
    # Its SHA-256 is the registered one: the hash check passes, and only the safe loader stands between
    # the file and the payload.
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    monkeypatch.setitem(weights.WEIGHTS, "t-poisoned-file", weights.WeightFile(
        "t-poisoned-file", evil.name, None, digest, None, "test", "made by the test"))
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(folder))
    zoo.register_class(NeedsPoisonedWeights, source="test")
    code = main(["run", "--metrics", "t-poisoned", "--dataset", "demo", "--categories", "cnn", "--out",
                 str(tmp_path / "run"), "--workers", "0", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(evil) in err and "refused to load" in err
    assert not marker.exists()


# -- determinism --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_are_byte_identical_and_record_seed_versions_and_hashes(
        demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    args = ["--metrics", "psnr,stlpips", "--dataset", "demo", "--categories", "cnn", "--bootstrap", "50",
            "--seed", "7", "--batch-size", "16", "--no-progress"]
    assert main(["run", *args, "--out", str(tmp_path / "a"), "--workers", "0"]) == 0
    assert main(["run", *args, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    a, b = _store_files(tmp_path / "a"), _store_files(tmp_path / "b")
    assert a == b
    assert {"summary.csv", "tables.md", "tables.tex", "scores/2afc/cnn/stlpips.csv", "scores/jnd/cnn/psnr.csv",
            "judgments/2afc/cnn.csv"} <= set(a)
    ra, rb = _record(tmp_path / "a"), _record(tmp_path / "b")
    assert ra["statistics"] == {"bootstrap": 50, "seed": 7}
    assert ra["versions"]["torch"] == torch.__version__.split("+")[0]  # without the local build tag
    assert ra["versions"]["numpy"] == np.__version__
    assert ra["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    fp = ra["fingerprint"]["global"]
    assert len(fp["scoring_code_sha256"]) == 64 and fp == rb["fingerprint"]["global"]
    # The wheel's file itself, found without importing the package and hashed here with hashlib.
    from importlib.util import find_spec

    spec = find_spec("stlpips_pytorch")
    assert spec is not None and spec.submodule_search_locations
    wheel_file = Path(next(iter(spec.submodule_search_locations))) / "weights" / "vST0.0" / "alex_shift_tolerant.pth"
    assert ra["metrics"]["stlpips"]["weights"] == {
        "stlpips-alex": hashlib.sha256(wheel_file.read_bytes()).hexdigest()}
