"""Judgment kinds: what each kind answers, and that the harness asks the kind instead of comparing strings."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import spips_bench
from spips_bench.data.bapps import JNDDataset, TwoAFCDataset, kind_splits, reader_for, resolve_categories
from spips_bench.run.runner import score_batch
from spips_bench.run.store import ScoreStore
from spips_bench.stats import core as stats
from spips_bench.stats.kinds import CORRELATIONS, JND, KINDS, MOS, MOS_STATISTICS, TWO_AFC, JudgmentKind, judgment_kind
from spips_bench.stats.summary import summarize, summarize_2afc, summarize_jnd

PACKAGE = Path(spips_bench.__file__).parent
KINDS_MODULE = PACKAGE / "stats" / "kinds.py"


def test_each_kind_answers_its_layout_columns_and_statistics() -> None:
    assert list(KINDS) == ["2afc", "jnd", "mos"] and KINDS["2afc"] is TWO_AFC and KINDS["jnd"] is JND
    assert KINDS["mos"] is MOS and MOS.is_scale and MOS.statistics == MOS_STATISTICS
    assert MOS.parts == ("dist", "ref", "mos") and MOS.pairs({"dist": "D", "ref": "R"}) == [("D", "R")]
    assert TWO_AFC.parts == ("ref", "p0", "p1", "judge") and JND.parts == ("p0", "p1", "same")
    assert TWO_AFC.score_columns == ("d0", "d1") and JND.score_columns == ("d",)
    assert TWO_AFC.folder("train") == ("2afc", "train") and JND.folder("val") == ("jnd", "val")
    assert TWO_AFC.statistics == ("2afc_score", "plcc", "srcc", "krcc", "plcc_continuous", "srcc_continuous",
                                  "krcc_continuous")
    assert JND.statistics == ("jnd_map", "plcc", "srcc", "krcc")
    assert str(TWO_AFC) == "2afc" and f"{JND}/cnn" == "jnd/cnn"  # the names in run.json and summary.csv
    batch = {"ref": "R", "p0": "A", "p1": "B", "judge": 0.5}
    assert TWO_AFC.pairs(batch) == [("A", "R"), ("B", "R")] and JND.pairs(batch) == [("A", "B")]


def test_a_kind_is_found_by_name_or_passes_through_and_an_unknown_one_is_named() -> None:
    assert judgment_kind("2afc") is TWO_AFC and judgment_kind(JND) is JND
    with pytest.raises(ValueError, match=r"unknown judgment kind '2afcc'.*'2afc', 'jnd', 'mos'.*Did you mean '2afc'"):
        judgment_kind("2afcc")
    with pytest.raises(ValueError, match=r"unknown judgment kind 'jnd'; use one of '2afc'\."):
        judgment_kind(JND, ("2afc",))
    with pytest.raises(ValueError, match="unknown judgment kind 3"):
        judgment_kind(3)  # type: ignore[arg-type]


def test_a_kind_with_a_pair_per_column_is_checked_when_defined() -> None:
    fields = dict(name="mos", label="MOS", image_parts=("dist", "ref"), judgment_column="mos",
                  headline="srcc", headline_label="SRCC", correlation_modes=())
    mos = JudgmentKind(scored_pairs=(("dist", "ref"),), score_columns=("d",), **fields)  # type: ignore[arg-type]
    assert mos.parts == ("dist", "ref", "mos") and mos.statistics == ("srcc",)
    with pytest.raises(ValueError, match="2 scored pairs for 1 score columns"):
        JudgmentKind(scored_pairs=(("dist", "ref"), ("ref", "dist")), score_columns=("d",),
                     **fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"scored pairs name \['p9'\]"):
        JudgmentKind(scored_pairs=(("p9", "ref"),), score_columns=("d",), **fields)  # type: ignore[arg-type]


class _Recording(torch.nn.Module):
    """``d = mean |dist - ref|`` per sample, recording each call (and optionally the fast path)."""

    def __init__(self, has_features: bool) -> None:
        super().__init__()
        self.has_features = has_features
        self.calls: list[tuple[str, ...]] = []
        self.names: dict[int, str] = {}

    def _name(self, x: torch.Tensor) -> str:
        return self.names[x.data_ptr()]

    def forward(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        self.calls.append(("call", self._name(dist), self._name(ref)))
        return (dist - ref).abs().flatten(1).mean(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(("features", self._name(x)))
        return x

    def compare(self, f_dist: torch.Tensor, f_ref: torch.Tensor) -> torch.Tensor:
        return (f_dist - f_ref).abs().flatten(1).mean(1)


def _batch(metric: _Recording) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(3, 3, 8, 8, generator=g) for k in ("ref", "p0", "p1")}
    metric.names = {v.data_ptr(): k for k, v in batch.items()}
    return batch


@pytest.mark.parametrize("fast", [False, True])
def test_a_batch_is_scored_on_the_kinds_pairs_in_contract_order(fast: bool) -> None:
    metric = _Recording(has_features=fast)
    batch = _batch(metric)
    d0, d1 = score_batch(TWO_AFC, metric, batch)
    expected = [(batch["p0"] - batch["ref"]), (batch["p1"] - batch["ref"])]
    for got, diff in zip((d0, d1), expected, strict=True):
        assert got.dtype == torch.float64 and torch.allclose(got, diff.abs().flatten(1).mean(1).double())
    if fast:  # the shared reference costs one feature pass: three per triplet, not four
        assert metric.calls == [("features", "ref"), ("features", "p0"), ("features", "p1")]
    else:
        assert metric.calls == [("call", "p0", "ref"), ("call", "p1", "ref")]
    metric.calls.clear()
    (d,) = score_batch("jnd", metric, batch)
    assert metric.calls == [("call", "p0", "p1")]  # JND: d = metric(p0, p1), no reference shared
    assert torch.allclose(d, (batch["p0"] - batch["p1"]).abs().flatten(1).mean(1).double())
    metric.calls.clear()
    (q,) = score_batch("mos", metric, {"dist": batch["p0"], "ref": batch["ref"]})
    assert metric.calls == [("call", "p0", "ref")]  # MOS: d = metric(dist, ref)
    assert torch.allclose(q, (batch["p0"] - batch["ref"]).abs().flatten(1).mean(1).double())
    with pytest.raises(ValueError, match="unknown judgment kind"):
        score_batch("pairs", metric, batch)


def test_the_store_lays_out_each_kind_by_its_name_and_columns(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path)
    assert store.score_path(TWO_AFC, "cnn", "psnr") == store.score_path("2afc", "cnn", "psnr") == (
        tmp_path / "scores" / "2afc" / "cnn" / "psnr.csv")
    assert store.judgment_path(JND, "cnn") == tmp_path / "judgments" / "jnd" / "cnn.csv"
    assert store.score_writer(TWO_AFC, "cnn", "psnr").columns == ("d0", "d1")
    assert store.score_writer("jnd", "cnn", "psnr").columns == ("d",)
    assert store.judgment_writer(JND, "cnn").columns == ("same",)
    assert store.score_writer("mos", "01", "psnr").columns == ("d",)
    assert store.judgment_writer("mos", "01").columns == ("mos",)
    with pytest.raises(ValueError, match="unknown judgment kind 'dmos'"):
        store.score_path("dmos", "cnn", "psnr")


def test_the_statistics_follow_the_kind() -> None:
    rng = np.random.default_rng(5)
    d0, d1, h = rng.random(40), rng.random(40), rng.random(40)
    by_object = stats.summary_intervals(TWO_AFC, d0, d1, h, n_boot=25, seed=2)
    assert by_object == stats.summary_intervals("2afc", d0, d1, h, n_boot=25, seed=2)
    assert tuple(by_object) == TWO_AFC.statistics
    assert tuple(stats.summary_intervals(JND, d0, h, n_boot=5)) == JND.statistics
    assert stats.HEADLINE_STATISTICS[TWO_AFC.headline] is stats.two_afc_statistic
    assert stats.HEADLINE_STATISTICS[JND.headline] is stats.jnd_map_statistic
    assert set(CORRELATIONS) == set(stats.CORRELATION_STATISTICS["decision"])
    assert {mode for k in KINDS.values() for _, mode in k.correlation_modes} == set(stats.CORRELATION_STATISTICS)

    rows = summarize(TWO_AFC, "cnn", "m", (d0, d1), h, higher_is_better=False, n_boot=10)
    assert rows == summarize_2afc("cnn", "m", d0, d1, h, higher_is_better=False, n_boot=10)
    assert [r.statistic for r in rows] == list(TWO_AFC.statistics) and {r.kind for r in rows} == {"2afc"}
    rows = summarize("jnd", "cnn", "m", (d0,), h, higher_is_better=True, n_boot=0)
    assert rows == summarize_jnd("cnn", "m", d0, h, higher_is_better=True, n_boot=0)
    with pytest.raises(ValueError, match=r"2AFC takes 2 score array\(s\) \(d0, d1\), got 1"):
        summarize(TWO_AFC, "cnn", "m", (d0,), h, higher_is_better=False)
    with pytest.raises(ValueError, match="d0, d1 and judge have lengths 40, 39, 40"):
        summarize(TWO_AFC, "cnn", "m", (d0, d1[1:]), h, higher_is_better=False)


def test_the_2afc_score_counts_ties_without_a_judgment() -> None:
    d0, d1, h = np.array([0.1, 0.2, 0.3]), np.array([0.1, 0.1, 0.4]), np.array([np.nan, np.nan, 1.0])
    assert stats.two_afc_statistic.samples(d0, d1, h) == 2  # the tie scores 0.5 whatever its judgment
    assert stats.jnd_map_statistic.samples(d0, h) == 1


def test_each_bapps_reader_reads_one_kind() -> None:
    assert reader_for("2afc") is TwoAFCDataset and reader_for(JND) is JNDDataset
    assert TwoAFCDataset.kind is TWO_AFC and JNDDataset.kind is JND
    assert kind_splits(TWO_AFC) == ("train", "val") and kind_splits("jnd") == ("val",)
    assert resolve_categories(JND, "val", None) == ["traditional", "cnn"]
    with pytest.raises(ValueError, match="unknown judgment kind 'mos'"):
        reader_for("mos")
    with pytest.raises(ValueError, match="unknown BAPPS kind"):
        kind_splits("mos")


# -- no string comparisons outside the kinds module -------------------------------------------------------

_NAMES = "|".join(map(re.escape, KINDS))
#: A kind name compared (``==``, ``!=``, ``in``) with a value, or a table literal keyed by kind names.
_COMPARISON = re.compile(
    rf"""(==|!=|\bin)\s*[(\[{{]?\s*["']({_NAMES})["']"""
    rf"""|["']({_NAMES})["']\s*(==|!=)"""
    rf"""|\{{\s*["']({_NAMES})["']\s*:"""
)


def _comparisons(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if not line.lstrip().startswith("#") and _COMPARISON.search(line)]


def test_the_comparison_finder_finds_the_string_branches() -> None:
    code = '''
if kind == "2afc":
    pass
kinds = [k for k in KINDS if k == "2afc" or split in SPLITS]
if "jnd" != kind: pass
ok = kind in ("2afc", "jnd")
COLUMNS = {"2afc": ("d0", "d1"), "jnd": ("d",)}
ds = (A if kind == 'jnd' else B)
# if kind == "2afc": a comment is not code
path = root / TWO_AFC.name / split
x = score_batch("2afc", metric, batch)
'''
    assert len(_comparisons(code)) == 6


def test_no_module_outside_the_kinds_module_compares_a_kind_to_a_string() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == KINDS_MODULE:
            continue
        hits = _comparisons(path.read_text(encoding="utf-8"))
        if hits:
            found[str(path.relative_to(PACKAGE))] = hits
    assert not found, f"ask the judgment kind (spips_bench.stats.kinds) instead: {found}"
