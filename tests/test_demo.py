"""The synthetic demo set: layout, labels, determinism, caching and atomic generation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from spips_bench import cli
from spips_bench.data import demo
from spips_bench.data.bapps import JND_CATEGORIES, TWO_AFC_CATEGORIES, JNDDataset, TwoAFCDataset
from spips_bench.errors import DatasetError


def _digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.ensure_demo(tmp_path_factory.mktemp("demo") / "set")


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the set so that tests of caching and atomicity run in well under a second."""
    monkeypatch.setitem(demo.TWO_AFC_SIZES, "val", {c: 2 for c in TWO_AFC_CATEGORIES["val"]})
    monkeypatch.setitem(demo.TWO_AFC_SIZES, "train", {c: 1 for c in TWO_AFC_CATEGORIES["train"]})
    monkeypatch.setattr(demo, "JND_SIZES", {c: 2 for c in JND_CATEGORIES})


def test_labels() -> None:
    assert demo.DEMO_LABEL == "synthetic judgments"
    assert isinstance(demo.DEMO_VERSION, int) and demo.DEMO_VERSION >= 1


def test_layout_sizes_and_readme(demo_root: Path) -> None:
    readme = (demo_root / "README.txt").read_text()
    assert "synthetic judgments" in readme and "NOT human" in readme
    for split, categories in TWO_AFC_CATEGORIES.items():
        for c in categories:
            ds = TwoAFCDataset(demo_root, split, c, load_size=None)
            assert len(ds) == (60 if split == "val" else 100), (split, c)
            assert ds.names[0] == "000000"
    for c in JND_CATEGORIES:
        assert len(JNDDataset(demo_root, "val", c)) == 60


def test_patches_are_stored_at_the_load_size(demo_root: Path) -> None:
    native = TwoAFCDataset(demo_root, "val", "color", load_size=None)
    loaded = TwoAFCDataset(demo_root, "val", "color", load_size=64)
    for i in (0, 17):
        a, b = native[i], loaded[i]
        assert a["ref"].shape == (3, 64, 64) and a["conversions"] == []
        for part in ("ref", "p0", "p1"):
            assert bool((a[part] == b[part]).all())


def _judgments(folder: Path) -> np.ndarray:
    return np.array([float(np.load(p)[0]) for p in sorted(folder.glob("*.npy"))])


@pytest.mark.parametrize(("split", "kind", "raters"), [("val", "judge", 5), ("train", "judge", 2)])
def test_judgments_are_rater_fractions(demo_root: Path, split: str, kind: str, raters: int) -> None:
    for c in TWO_AFC_CATEGORIES[split]:
        h = _judgments(demo_root / "2afc" / split / c / kind)
        np.testing.assert_allclose(h * raters, np.round(h * raters), atol=1e-5)
        assert h.min() >= 0 and h.max() <= 1
        assert len(np.unique(h)) >= 3  # raters disagree on some triplets, agree on others
    for c in JND_CATEGORIES:
        s = _judgments(demo_root / "jnd" / "val" / c / "same")
        np.testing.assert_allclose(s * 3, np.round(s * 3), atol=1e-5)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).mean())


def _mse_two_afc_score(root: Path, category: str) -> float:
    ds = TwoAFCDataset(root, "val", category, load_size=None)
    score = []
    for i in range(len(ds)):
        item = ds[i]
        d0 = _mse(item["ref"].numpy(), item["p0"].numpy())
        d1 = _mse(item["ref"].numpy(), item["p1"].numpy())
        h = float(item["judge"])
        score.append((d0 < d1) * (1 - h) + (d1 < d0) * h + (d0 == d1) * 0.5)
    return float(np.mean(score))


@pytest.mark.parametrize("category", ["superres", "deblur", "frameinterp"])
def test_judgments_follow_distortion_strength(demo_root: Path, category: str) -> None:
    """Simulated raters prefer the less distorted patch, so plain MSE must agree with them above chance.

    A random metric's 2AFC score is 0.5. In these categories p0 and p1 come from one distortion family,
    whose MSE grows with strength, so MSE scores well above chance (about 0.78-0.82 in version 1, just
    under the raters' own ceiling of about 0.85); a judgment model pointing the wrong way would score
    below 0.5.
    """
    assert _mse_two_afc_score(demo_root, category) > 0.7


def test_jnd_same_decreases_with_distortion(demo_root: Path) -> None:
    # JND: pairs judged identical by most raters are closer in MSE than pairs judged different.
    jnd = JNDDataset(demo_root, "val", "traditional", load_size=None)
    same = np.array([float(jnd[i]["same"]) for i in range(len(jnd))])
    dist = np.array([_mse(jnd[i]["p0"].numpy(), jnd[i]["p1"].numpy()) for i in range(len(jnd))])
    assert 0 < (same > 0.5).sum() < len(same)
    assert np.median(dist[same > 0.5]) < np.median(dist[same <= 0.5])


def test_full_set_file_count(demo_root: Path) -> None:
    files = _digest_tree(demo_root)
    assert len(files) == 6 * 60 * 4 + 3 * 100 * 4 + 2 * 60 * 3 + 2  # + README.txt and the marker


def test_generation_is_byte_identical(demo_root: Path, tiny: None, tmp_path: Path) -> None:
    """A second, independent generation writes the same bytes, PNG files included.

    Each item is drawn from its own seed, so a shrunken set holds exactly the first items of the full
    set: comparing it with the full set of the fixture checks determinism without a second full run.
    """
    again = _digest_tree(demo.generate_demo(tmp_path / "again"))
    full = _digest_tree(demo_root)
    items = {k: v for k, v in again.items() if k.endswith((".png", ".npy"))}
    assert len(items) == 6 * 2 * 4 + 3 * 1 * 4 + 2 * 2 * 3
    assert items == {k: full[k] for k in items}
    assert demo.generate_demo(tmp_path / "third") and _digest_tree(tmp_path / "third") == again


def test_complete_set_is_reused(demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: object) -> Path:
        raise AssertionError("a complete demo set must not be generated again")

    monkeypatch.setattr(demo, "generate_demo", fail)
    assert demo.ensure_demo(demo_root) == demo_root


def test_default_root_follows_the_cache_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPIPS_BENCH_CACHE", str(tmp_path))
    assert demo.default_demo_root() == tmp_path / f"demo-v{demo.DEMO_VERSION}"
    monkeypatch.delenv("SPIPS_BENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo.default_demo_root() == tmp_path / "xdg" / "spips-bench" / f"demo-v{demo.DEMO_VERSION}"


def test_interrupted_generation_leaves_nothing(tiny: None, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_write_jnd", crash)
    with pytest.raises(KeyboardInterrupt):
        demo.ensure_demo(tmp_path / "set")
    assert list(tmp_path.iterdir()) == []


def test_foreign_folder_is_not_touched(tiny: None, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="is not a spips-bench demo set"):
        demo.ensure_demo(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_older_version_is_replaced(tiny: None, tmp_path: Path) -> None:
    root = demo.ensure_demo(tmp_path / "set")
    marker = root / demo._MARKER
    marker.write_text(marker.read_text().replace('"version": 1', '"version": 0'))
    (root / "stale.txt").write_text("from the old version")
    assert demo.ensure_demo(root) == root
    assert not (root / "stale.txt").exists() and demo._is_complete(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_cli_demo(tiny: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["download", "demo", "--root", str(tmp_path / "d")]) == 0
    assert "synthetic judgments" in capsys.readouterr().out
    assert (tmp_path / "d" / "2afc" / "val" / "cnn" / "judge" / "000001.npy").is_file()
    assert cli.main(["download", "demo", "--root", str(tmp_path / "d"), "--split", "train"]) == 2
    assert "apply to bapps" in capsys.readouterr().err
