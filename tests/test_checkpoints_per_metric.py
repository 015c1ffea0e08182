"""`run --checkpoint NAME=PATH`: one trained checkpoint per metric, recorded per metric, footnoted in the
tables, refused on a change, and replayed by `tables --check` (also for a folder built by several runs).

The checkpoints are the data-free heads of the shift-tolerant SPIPS variants (their trunk weights ship with
stlpips-pytorch, so everything runs offline) with their weights scaled by seeded random factors: trained
parameters in form, without any training. Runs score the demo set's cnn category with few resamples.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from spips_bench.cli import main
from spips_bench.errors import RunConfigError
from spips_bench.io import sha256_file
from spips_bench.run.config import RunConfig

FULL, ABLA1, ABLA2 = "spips-alex-st", "spips-alex-st-abla1", "spips-alex-st-abla2"
BASE = ["--dataset", "demo", "--categories", "cnn", "--workers", "0", "--no-progress", "--bootstrap", "20"]


def _perturbed(name: str, path: Path, seed: int) -> Path:
    """Save ``name``'s heads with every weight scaled by a seeded factor in [0.5, 1.5)."""
    from spips_bench.registry import create_metric

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = create_metric(name)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in metric.head_parameters():
            p.mul_(torch.rand(p.shape, generator=gen) + 0.5)
    return metric.save_checkpoint(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Iterator[Path]:
    """A folder with checkpoints a, b, c (two for the full model, one per ablation), the demo set cached."""
    base = tmp_path_factory.mktemp("ckpt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIPS_BENCH_CACHE", str(demo_cache))
        mp.delenv("SPIPS_BENCH_BAPPS", raising=False)
        _perturbed(FULL, base / "a.safetensors", 1)
        _perturbed(ABLA1, base / "b.safetensors", 2)
        _perturbed(ABLA2, base / "c.safetensors", 3)
        _perturbed(FULL, base / "a2.safetensors", 4)
        yield base


@pytest.fixture(scope="module")
def per_metric(env: Path) -> Path:
    """One run of two metrics, each with its own checkpoint, named in two other spellings."""
    out = env / "per-metric"
    assert main(["run", "--metrics", f"{FULL},{ABLA1}", *BASE, "--out", str(out),
                 "--checkpoint", f"SPIPS_ALEX_ST={env / 'a.safetensors'}",
                 "--checkpoint", f"{ABLA1.upper()}={env / 'b.safetensors'}"]) == 0
    return out


def _record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def test_each_metric_records_its_own_checkpoint_and_the_tables_name_it(env: Path, per_metric: Path) -> None:
    record = _record(per_metric)
    for name, file in ((FULL, "a.safetensors"), (ABLA1, "b.safetensors")):
        entry = record["metrics"][name]
        sha = sha256_file(env / file)
        assert entry["checkpoint"] == str((env / file).resolve())
        assert entry["checkpoint_sha256"] == sha and entry["trained"] is True and entry["status"] == "ok"
        assert record["fingerprint"]["metrics"][name]["checkpoint_sha256"] == sha
        for table in ("tables.md", "tables.tex"):
            text = (per_metric / table).read_text(encoding="utf-8")
            shown = file.replace("_", "\\_") if table.endswith("tex") else file
            assert f"{name} with {shown} (SHA-256 {sha[:12]})" in text, table
    assert record["metrics"][FULL]["checkpoint_sha256"] != record["metrics"][ABLA1]["checkpoint_sha256"]


def test_a_folder_with_per_metric_checkpoints_replays(per_metric: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tables", "--check", str(per_metric)]) == 0, capsys.readouterr().err
    assert "identical" in capsys.readouterr().out


def test_a_folder_built_by_three_runs_with_their_own_checkpoints_replays(
        env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(env)  # a relative path is recorded as the file it named
    out = tmp_path / "three"
    runs = [(FULL, "a.safetensors"), (ABLA1, "b.safetensors"), (ABLA2, f"{ABLA2}=c.safetensors")]
    for metric, checkpoint in runs:
        assert main(["run", "--metrics", metric, *BASE, "--out", str(out), "--checkpoint", checkpoint]) == 0
    record = _record(out)
    assert [record["metrics"][m]["checkpoint_sha256"] for m, _ in runs] == [
        sha256_file(env / f) for f in ("a.safetensors", "b.safetensors", "c.safetensors")]
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["tables", "--check", str(out)]) == 0, capsys.readouterr().err
    # the committed checkpoint of one metric changes: the check refuses before scoring anything
    _perturbed(ABLA1, env / "b-copy.safetensors", 5)
    saved = (env / "b.safetensors").read_bytes()
    try:
        shutil.copy(env / "b-copy.safetensors", env / "b.safetensors")
        capsys.readouterr()
        assert main(["tables", "--check", str(out)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert f"{(env / 'b.safetensors').resolve()}: metric {ABLA1!r} was scored with this checkpoint" in err
        assert f"now has SHA-256 {sha256_file(env / 'b.safetensors')[:12]}" in err
        assert "regenerating" not in err
    finally:
        (env / "b.safetensors").write_bytes(saved)


def test_a_rerun_with_another_checkpoint_is_refused_and_overwrite_rescores(
        env: Path, per_metric: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rerun"
    shutil.copytree(per_metric, out)
    other = ["run", "--metrics", f"{FULL},{ABLA1}", *BASE, "--out", str(out),
             "--checkpoint", f"{FULL}={env / 'a2.safetensors'}", "--checkpoint", f"{ABLA1}={env / 'b.safetensors'}"]
    capsys.readouterr()
    assert main(other) == 2
    err = capsys.readouterr().err
    assert f"metric {FULL!r} was scored with other settings (checkpoint_sha256" in err and "--overwrite" in err
    assert _record(out)["metrics"][FULL]["checkpoint_sha256"] == sha256_file(env / "a.safetensors")
    # --overwrite discards the folder's results and scores this configuration
    assert main([*other, "--overwrite"]) == 0
    record = _record(out)
    assert record["metrics"][FULL]["checkpoint_sha256"] == sha256_file(env / "a2.safetensors")
    assert record["metrics"][ABLA1]["checkpoint_sha256"] == sha256_file(env / "b.safetensors")
    assert f"{FULL} with a2.safetensors" in (out / "tables.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("metrics", "values", "message"), [
    (f"{FULL},psnr", ["spips-alex-sx={a}"], f"'spips-alex-sx' is not among the metrics of this run ({FULL}, "
                                               f"psnr). Did you mean {FULL!r}?"),
    (FULL, [f"{ABLA1}={{a}}"], f"{ABLA1!r} is not among the metrics of this run ({FULL}). Did you mean {FULL!r}?"),
    (f"{FULL},psnr", ["PSNR={a}"], f"metric 'psnr' takes no checkpoint (of this run only {FULL} take one)"),
    (FULL, [f"{FULL}={{a}}.missing"], "no such file"),
    (FULL, [f"{FULL}={{a}}", f"{FULL}={{a}}"], f"{FULL!r} already has a checkpoint"),
    (FULL, [f"{FULL}={{a}}", "spips_alex_st={a}"], f"metric {FULL!r} already has a checkpoint"),
    (FULL, [f"{FULL}="], "missing a file after '='"),
    (FULL, ["={a}"], "missing a metric name before '='"),
    (FULL, ["{a}", f"{FULL}={{a}}"], "is left for no metric"),
    (FULL, ["{a}.missing"], "no such file"),
])
def test_bad_checkpoint_arguments_are_one_line_errors(env: Path, metrics: str, values: list[str], message: str,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [x for v in values for x in ("--checkpoint", v.format(a=env / "a.safetensors"))]
    assert main(["run", "--metrics", metrics, *BASE, "--out", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_bare_path_holding_an_equals_sign_keeps_its_meaning(env: Path) -> None:
    from spips_bench.cli.run import checkpoint_arguments

    odd = env / "lr=1e-3.safetensors"
    shutil.copy(env / "a.safetensors", odd)
    assert checkpoint_arguments([str(odd)]) == (odd, {})
    assert checkpoint_arguments([f"{FULL}={odd}"]) == (None, {FULL: odd})


def test_the_python_interface_resolves_names_and_applies_the_bare_checkpoint_to_the_rest(env: Path) -> None:
    from spips_bench.run.plan import metric_checkpoints

    a, b = env / "a.safetensors", env / "b.safetensors"
    config = RunConfig(metrics=[FULL, ABLA1, "psnr"], dataset="demo", checkpoint=a,
                       checkpoints={ABLA1.replace("-", "_"): b})
    assert metric_checkpoints(config) == {FULL: a, ABLA1: b}
    with pytest.raises(RunConfigError, match="not among the metrics"):
        RunConfig(metrics=["psnr"], dataset="demo", checkpoints={FULL: a})


def test_a_record_written_before_per_metric_checkpoints_replays_its_run_checkpoint(env: Path) -> None:
    from spips_bench.cli.tables import recorded_checkpoints, replay_configs

    a = env / "a.safetensors"
    record: dict[str, Any] = {"arguments": {"metrics": [FULL, "psnr"], "checkpoint": str(a)},
                              "dataset": {"name": "demo"}, "categories": {"2afc/cnn": 60},
                              "metrics": {FULL: {"checkpoint_sha256": sha256_file(a), "scored": ["2afc/cnn"]},
                                          "psnr": {"scored": ["2afc/cnn"]}}}
    assert recorded_checkpoints(record) == {FULL: a}
    (config,) = replay_configs(record, env / "unused")
    assert config.checkpoints == {FULL: a} and config.checkpoint is None
    record["metrics"][FULL]["checkpoint_sha256"] = "0" * 64
    with pytest.raises(RunConfigError, match="now has SHA-256"):
        replay_configs(record, env / "unused")
