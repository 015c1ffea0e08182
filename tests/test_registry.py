"""The registry: cards, aliases, did-you-mean, runtime registration and entry-point plugins."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import spips_bench
from spips_bench import create_metric
from spips_bench.errors import UnknownMetricError
from spips_bench.metric import Metric
from spips_bench.registry import MetricSpec, Registry, accepts_option, load_cards


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


def _offline_options(spec: MetricSpec) -> dict[str, Any]:
    """``pretrained=False`` where the card's ImageNet trunk is not on this machine (a random trunk)."""
    return {"pretrained": False} if spec.missing_weights() and accepts_option(spec, "pretrained") else {}


def _pair(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    ref = torch.rand(2, 3, size, size, generator=g)
    return (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1), ref


def _seeded(build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    torch.manual_seed(0)  # the same random trunk and heads for both constructions
    return build(*args, **kwargs)


def test_every_card_is_the_metadata_of_what_it_builds() -> None:
    # One source of truth: the instance reads its card, and its variant() values (minimum size, weight
    # files, trained, differentiable) equal the card's at the card's options.
    dist, ref = _pair()
    for spec in load_cards():
        cls = spec.load_class()
        assert issubclass(cls, Metric), spec.name
        extra = _offline_options(spec)
        made = _seeded(create_metric, spec.name, **extra)
        direct = _seeded(cls, **spec.options, **extra)
        assert made.name == direct.name == spec.name
        if extra:  # the card describes the ImageNet trunk, absent here: its variant as it would be with it
            assert not made.trained and spec.weights[0] not in made.weights, spec.name
            made.pretrained = True
        assert made.spec == spec, spec.name
        with torch.inference_mode():
            a, b = made(dist, ref), direct(dist, ref)
            assert a.shape == b.shape == (2,) and float((a - b).abs().max()) <= 1e-7, (spec.name, a, b)


def test_each_class_built_with_its_defaults_is_its_default_card() -> None:
    import inspect

    from spips_bench.zoo.ssim import MSSSIM

    by_class: dict[str, list[MetricSpec]] = {}
    for spec in load_cards():
        by_class.setdefault(spec.target, []).append(spec)
    dist, ref = _pair()
    for target, specs in by_class.items():
        cls = specs[0].load_class()
        params = inspect.signature(cls).parameters
        defaults = {k: p.default for k, p in params.items() if p.default is not p.empty}
        default_cards = [s for s in specs if all((tuple(v) if isinstance(v, list) else v) == defaults.get(k)
                                                 for k, v in s.options.items())]
        assert len(default_cards) == 1, f"{target}: cards with the constructor's defaults: {default_cards}"
        spec = default_cards[0]
        extra = _offline_options(spec)
        plain = _seeded(cls, **extra)
        made = _seeded(create_metric, spec.name, **extra)
        assert plain.spec == made.spec and plain.name == spec.name, target
        with torch.inference_mode():
            torch.testing.assert_close(plain(dist, ref), made(dist, ref), atol=1e-7, rtol=0)
    assert MSSSIM().spec == spips_bench.get_spec("ms-ssim")


def test_options_outside_every_card_name_the_nearest_card() -> None:
    from spips_bench.zoo.spips.model import SPIPS
    from spips_bench.zoo.ssim import MSSSIM

    # colour is not an option that selects a card: the instance stays the card of its pooling
    assert MSSSIM(color="rgb", combine="weighted-sum").name == "ms-ssim-wtd-sum"
    odd = SPIPS("vgg", streams=("traditional", "perceptual"), pretrained=False)
    assert odd.name == "spips-abla1[backbone='vgg']"
    assert odd.min_size == 41 and odd.weights == () and odd.trained is False
    assert SPIPS("vgg", streams=("perceptual", "semantic"), pretrained=False).min_size == 32


def test_a_plugin_class_declares_its_own_metadata() -> None:
    metric = _MAE()  # never registered: its class attributes are its metadata
    assert (metric.name, metric.higher_is_better, metric.min_size, metric.differentiable) == (
        "test-mae", False, 1, False)
    assert metric.spec.target == f"{__name__}:_MAE"


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
