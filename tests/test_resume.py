"""Reruns into a run folder: a metric added later scores alone, and a store file changed after it was
written is refused by name (its digest in run.json) until it is removed, after which the rerun repairs it."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from spips_bench import registry
from spips_bench.cli import main
from spips_bench.metric import Metric

N = 60  # samples per demo category


class CountingMAE(Metric):
    """Mean absolute difference that counts the pairs it scores, per metric name."""

    name = "t-count-a"
    higher_is_better = False
    pairs: ClassVar[Counter[str]] = Counter()

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        type(self).pairs[self.name] += dist.shape[0]
        return (dist - ref).abs().mean(dim=(1, 2, 3))


class CountingMAE2(CountingMAE):
    name = "t-count-b"

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return super().score(dist, ref) * 2


@pytest.fixture
def zoo(monkeypatch: pytest.MonkeyPatch) -> registry.Registry:
    reg = registry.Registry()
    for cls in (CountingMAE, CountingMAE2):
        reg.register_class(cls, source="test")
    monkeypatch.setattr(registry, "REGISTRY", reg)
    CountingMAE.pairs.clear()
    return reg


def _args(out: Path, metrics: str) -> list[str]:
    return ["run", "--metrics", metrics, "--dataset", "demo", "--categories", "cnn", "--out", str(out),
            "--workers", "0", "--batch-size", "16", "--bootstrap", "10", "--no-progress"]


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("run.json", ".lock")}


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def test_an_added_metric_is_the_only_one_scored(zoo: registry.Registry, demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(_args(out, "t-count-a")) == 0
    assert CountingMAE.pairs == {"t-count-a": 2 * N + N}  # 2AFC: d0 and d1; JND: d
    first = _files(out)
    CountingMAE.pairs.clear()
    assert main(_args(out, "t-count-a,t-count-b")) == 0
    assert CountingMAE.pairs == {"t-count-b": 3 * N}  # the stored metric is not run again
    record = _record(out)
    assert record["throughput"]["pair_scores"] == 3 * N
    assert set(record["metric_seconds"]) == {"t-count-b"}
    after = _files(out)
    assert {k: v for k, v in after.items() if "t-count-a" in k} == {k: v for k, v in first.items() if "t-count-a" in k}
    assert main(_args(tmp_path / "together", "t-count-a,t-count-b")) == 0
    assert after == _files(tmp_path / "together")  # the same folder as both metrics scored at once
    CountingMAE.pairs.clear()
    assert main(_args(out, "t-count-a,t-count-b")) == 0
    assert CountingMAE.pairs == {}  # nothing missing: nothing scored


def _damage_extra_row(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "000999,0.5,0.25\n", encoding="utf-8")


def _damage_cut_number(path: Path) -> None:
    head, first, *rest = path.read_text(encoding="utf-8").split("\n")
    sample, d0, d1 = first.split(",")
    cut = d0[: d0.index(".") + 1]  # 0.0571... -> 0.: a row cut inside a number
    path.write_text("\n".join([head, f"{sample},{cut},{d1}", *rest]), encoding="utf-8")


def _damage_swap(path: Path) -> None:
    head, *rows = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    swapped = [",".join([r.split(",")[0], r.split(",")[2], r.split(",")[1]]) for r in rows]
    path.write_text("\n".join([head, *swapped]) + "\n", encoding="utf-8")


@pytest.mark.parametrize(("damage", "message"), [
    (_damage_extra_row, "its content does not match the digest"),
    (_damage_cut_number, r"psnr\.csv:2: .*not in the stored number form"),
    (_damage_swap, "its content does not match the digest"),
], ids=["extra-row", "cut-number", "swapped-columns"])
def test_a_damaged_store_file_is_refused_by_name_and_a_rerun_repairs_it(
        damage: Any, message: str, demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(_args(out, "psnr")) == 0
    whole = _files(out)
    path = out / "scores" / "2afc" / "cnn" / "psnr.csv"
    damage(path)
    capsys.readouterr()
    for argv in (["tables", "--from", str(out)], _args(out, "psnr")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(path) in err and re.search(message, err), err
        assert "remove it and rerun" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    failed = _record(out)
    assert failed["status"] == "failed" and str(path) in failed["error"]
    path.unlink()  # what the message says: remove it, rerun the same command
    assert main(_args(out, "psnr")) == 0
    assert _files(out) == whole
