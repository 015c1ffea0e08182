"""The registry: cards, aliases, did-you-mean, runtime registration and entry-point plugins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

import spips_bench
from spips_bench.errors import UnknownMetricError
from spips_bench.metric import Metric
from spips_bench.registry import MetricSpec, Registry, load_cards


class _MAE(Metric):
    """Mean absolute error over all pixels."""

    name = "test-mae"
    higher_is_better = False

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return (dist - ref).abs().flatten(1).mean(1)


def test_builtin_cards_load_and_names_are_unique() -> None:
    specs = load_cards()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert {"psnr", "ssim", "ms-ssim", "vif"} <= set(names)


def test_every_card_matches_its_class_metadata() -> None:
    for spec in load_cards():
        cls = spec.load_class()
        assert issubclass(cls, Metric), spec.name
        assert cls.higher_is_better == spec.higher_is_better, spec.name
        assert cls.symmetric == spec.symmetric, spec.name
        assert cls.min_size <= spec.min_size or spec.options, spec.name


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownMetricError, match=r"Did you mean 'ssim'"):
        spips_bench.create_metric("ssmi")
    with pytest.raises(KeyError):  # also a KeyError, for callers that catch that
        spips_bench.get_spec("no-such-metric")


def test_aliases_and_case_resolve_to_the_same_spec() -> None:
    reg = Registry()
    reg._loaded_builtins = reg._loaded_plugins = True
    reg.register(MetricSpec(name="foo-bar", target="x:Y", higher_is_better=True, aliases=("FB",)))
    assert reg.get("FOO_BAR").name == "foo-bar"
    assert reg.get("fb").name == "foo-bar"
    with pytest.raises(ValueError, match="already belongs"):
        reg.register(MetricSpec(name="other", target="x:Z", higher_is_better=True, aliases=("fb",)))


def test_register_class_reads_metadata_and_creates() -> None:
    reg = Registry()
    reg._loaded_builtins = reg._loaded_plugins = True
    spec = reg.register_class(_MAE)
    assert spec.name == "test-mae" and spec.higher_is_better is False
    m = reg.create("test-mae")
    x = torch.zeros(2, 3, 8, 8)
    y = torch.full((2, 3, 8, 8), 0.25)
    assert torch.allclose(m(x, y), torch.tensor([0.25, 0.25]))


def test_differentiable_is_read_from_cards_and_classes() -> None:
    reg = Registry()
    reg._loaded_builtins = reg._loaded_plugins = True
    assert reg.register_class(_MAE).differentiable is False  # a class that does not say: not claimed

    class _Smooth(_MAE):
        name = "test-smooth"
        differentiable = True

    assert reg.register_class(_Smooth).differentiable is True
    assert spips_bench.get_spec("psnr").differentiable is True
    assert spips_bench.get_spec("ssim").differentiable is False


def test_renamed_ms_ssim_variants_resolve() -> None:
    # `ms-ssim` is the product pooling; its former explicit name stays an alias, the weighted sum has its own
    assert spips_bench.get_spec("ms-ssim-product").name == "ms-ssim"
    assert spips_bench.get_spec("msssim-product").name == "ms-ssim"
    assert spips_bench.get_spec("ms-ssim-weighted-sum").name == "ms-ssim-wtd-sum"
    with pytest.raises(UnknownMetricError, match=r"Did you mean .*'ms-ssim-wtd-sum'"):
        spips_bench.get_spec("ms-ssim-wtdsum")


def _write_plugin(root: Path, *, broken: bool = False) -> None:
    # A distinct module name per case: sys.modules would otherwise keep the first test's module.
    module = "toyplugin_broken" if broken else "toyplugin"
    pkg = root / module
    pkg.mkdir()
    body = "raise RuntimeError('plugin import failed')\n" if broken else textwrap.dedent('''
        import torch
        from spips_bench.metric import Metric

        class L1(Metric):
            """Toy plugin metric: mean absolute difference."""
            name = "toy-l1"
            higher_is_better = False
            citation = "none"

            def score(self, dist, ref):
                return (dist - ref).abs().flatten(1).mean(1)
    ''')
    (pkg / "__init__.py").write_text(body)
    info = root / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[spips_bench.metrics]\ntoy-l1 = {module}:L1\n")


def test_entry_point_plugin_is_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    assert "toy-l1" in reg.names()
    spec = reg.get("toy-l1")
    assert spec.source == "toyplugin" and spec.higher_is_better is False
    m = reg.create("toy-l1")
    out = m(torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4))
    assert out.shape == (1,) and float(out) == 1.0


def test_broken_plugin_is_reported_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_plugin(tmp_path, broken=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    names = reg.names()
    assert "psnr" in names and "toy-l1" not in names
    assert "plugin import failed" in reg.plugin_errors["toy-l1"]


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, spips_bench; spips_bench.list_metrics();"
        "heavy = [m for m in ('torch', 'pyiqa', 'matplotlib', 'torchvision', 'piq') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing spips_bench loaded {out.stdout.strip()}"
