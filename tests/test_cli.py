"""The command line through a subprocess, as a user runs it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CALIB = Path(__file__).parent / "data" / "calibration"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "spips_bench", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def _pair(name: str) -> tuple[Path, Path]:
    ref = next((CALIB / "ref").glob(f"{name}.*"))
    dist = next((CALIB / "dist").glob(f"{name}.*"))
    return ref, dist


def _official() -> dict[str, dict[str, float]]:
    with open(CALIB / "official.csv", newline="") as f:
        return {row["metric"]: {k: float(v) for k, v in row.items() if k.startswith("I")} for row in csv.DictReader(f)}


def test_version_and_help() -> None:
    assert "spips-bench" in cli("--version").stdout
    out = cli("--help").stdout
    for command in ("list", "score"):
        assert command in out


def test_list_shows_zoo() -> None:
    out = cli("list").stdout
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["metric", "better"]
    psnr = next(line for line in lines if line.startswith("psnr "))
    assert "higher" in psnr
    data = json.loads(cli("list", "--format", "json").stdout)
    by_name = {r["name"]: r for r in data}
    assert by_name["ssim"]["direction"] == "higher"
    assert by_name["psnr"]["weights"] == [] and by_name["psnr"]["weights_present"] is True


def test_catalogue_file_is_current() -> None:
    committed = (ROOT / "metrics" / "README.md").read_text(encoding="utf-8")
    assert cli("list", "--format", "md").stdout == committed, (
        "metrics/README.md is stale: run `spips-bench list --format md > metrics/README.md`"
    )


def test_score_json_matches_official_values() -> None:
    ref, dist = _pair("I03")
    out = json.loads(cli("score", str(ref), str(dist), "--metrics", "psnr,ssim", "--json").stdout)
    official = _official()
    assert abs(out["scores"]["psnr"] - official["psnr"]["I03"]) < 0.01
    assert abs(out["scores"]["ssim"] - official["ssim"]["I03"]) < 1e-3
    assert out["metrics"]["psnr"]["higher_is_better"] is True
    assert out["conversions"] == {}


def test_score_reports_conversion_and_size_mismatch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "ref.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    Image.fromarray(rgb[:32]).save(tmp_path / "small.png")

    proc = cli("score", str(tmp_path / "ref.png"), str(tmp_path / "rgba.png"), "--metrics", "psnr", "--json")
    out = json.loads(proc.stdout)
    assert out["scores"]["psnr"] is None  # identical pixels once alpha is dropped: +inf, not a JSON number
    assert out["nonfinite"] == {"psnr": "+inf"}
    assert "Infinity" not in proc.stdout and '"inf"' not in proc.stdout
    assert out["conversions"] == {str(tmp_path / "rgba.png"): "RGBA->RGB (alpha dropped)"}
    assert "alpha dropped" in proc.stderr

    proc = cli("score", str(tmp_path / "ref.png"), str(tmp_path / "gray.png"), "--metrics", "psnr")
    assert "L->RGB" in proc.stderr

    proc = cli("score", str(tmp_path / "ref.png"), str(tmp_path / "small.png"), check=False)
    assert proc.returncode == 2
    assert "size mismatch" in proc.stderr and "48x40" in proc.stderr and "48x32" in proc.stderr


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("score", "a.png", "b.png", "--metrics", "ssmi"), "Did you mean 'ssim'"),
        (("score", "missing-ref.png", "missing-dist.png", "--metrics", "psnr"), "missing-ref.png: no such file"),
        (("score", str(CALIB / "ref" / "I03.png"), str(CALIB / "dist" / "I03.png"), "--device", "gpu"),
         "torch calls a GPU 'cuda'"),
        (("score", str(CALIB / "ref"), str(CALIB / "dist" / "I03.png")), "is a folder, not an image file"),
        (("explain", str(CALIB / "ref" / "I03.png"), str(CALIB / "dist" / "I03.png"), "--metric", "psnr", "--out",
          "never-written.png"), "psnr is not a SPIPS variant"),
        (("run", "--metrics", "psnr", "--device", "foo", "--out", "never-written"), "'foo' is not a device name"),
    ],
)
def test_errors_are_one_line_with_exit_2(args: tuple[str, ...], pattern: str) -> None:
    proc = cli(*args, check=False)
    assert proc.returncode == 2
    assert pattern in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["list"], ["weights"]])
def test_a_reader_that_closes_the_pipe_gets_no_traceback(command: list[str]) -> None:
    # `spips-bench list | head -0`: the reader is gone before the first line is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "spips_bench", *command], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141
