"""pyiqa bridge: ``pyiqa.create_metric`` returns SPIPS variants scoring exactly as spips-bench."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

pyiqa = pytest.importorskip("pyiqa")

from spips_bench.integrations.pyiqa import ARCH_TYPE, bridged_metric_names, register, unregister  # noqa: E402


@pytest.fixture(autouse=True)
def _registered() -> Iterator[list[str]]:
    torch.set_num_threads(1)  # small inputs; see tests/test_spips.py
    names = register()
    yield names
    unregister()


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 64, 64, generator=gen)
    return (ref + 0.1 * torch.randn(ref.shape, generator=gen)).clamp(0, 1), ref


def test_every_variant_is_listed_as_a_lower_better_fr_metric(_registered: list[str]) -> None:
    expected = set(bridged_metric_names())
    assert {"spips", "spips-abla1", "spips-abla2", "spips-alex-st", "spips-vgg-st"} <= expected
    assert "lpips" not in expected and "psnr" not in expected  # only the cards that ask for the bridge
    assert set(_registered) == expected
    fr = set(pyiqa.list_models(metric_mode="FR"))
    assert expected <= fr
    assert "lpips" in fr  # pyiqa's own metrics are untouched
    assert pyiqa.default_model_configs.DEFAULT_CONFIGS["lpips"]["metric_opts"]["type"] == "LPIPS"


def test_scores_equal_spips_bench_with_offline_backbone() -> None:
    import spips_bench

    dist, ref = _pair()
    m = pyiqa.create_metric("spips-alex-st", device="cpu")
    assert m.lower_better is True
    ours = spips_bench.create_metric("spips-alex-st")
    with torch.no_grad():
        expected = ours(dist, ref)
    got = m(dist, ref)
    assert got.shape == (2, 1)
    torch.testing.assert_close(got.view(-1), expected, atol=0, rtol=0)


def test_options_reach_the_metric_random_trunk_and_ablation() -> None:
    import spips_bench

    dist, ref = _pair()
    torch.manual_seed(3)
    m = pyiqa.create_metric("spips-abla1", device="cpu", pretrained=False)
    torch.manual_seed(3)
    ours = spips_bench.create_metric("spips-abla1", pretrained=False)
    with torch.no_grad():
        torch.testing.assert_close(m(dist, ref).view(-1), ours(dist, ref), atol=0, rtol=0)
    assert m.net.metric.streams == ("traditional", "perceptual")


def test_as_loss_backpropagates() -> None:
    dist, ref = _pair()
    dist = dist.clone().requires_grad_(True)
    loss = pyiqa.create_metric("spips-alex-st-abla2", device="cpu", as_loss=True)(dist, ref)
    loss.backward()
    assert dist.grad is not None and float(dist.grad.abs().sum()) > 0


def test_register_is_idempotent_and_unregister_cleans_up() -> None:
    assert register() == register()
    unregister()
    assert "spips" not in pyiqa.default_model_configs.DEFAULT_CONFIGS
    assert ARCH_TYPE in pyiqa.utils.registry.ARCH_REGISTRY
    register()


def test_the_bridge_follows_the_card_not_the_class() -> None:
    from dataclasses import replace

    from spips_bench.registry import REGISTRY, MetricSpec

    spec = REGISTRY.get("spips-vgg")
    REGISTRY.register(replace(spec, pyiqa_bridge=False), overwrite=True)
    try:
        assert "spips-vgg" not in bridged_metric_names()
        plain = MetricSpec(name="psnr-bridged", target="spips_bench.zoo.psnr:PSNR", higher_is_better=True,
                           pyiqa_bridge=True)
        REGISTRY.register(plain)
        try:
            assert "psnr-bridged" in register()
            m = pyiqa.create_metric("psnr-bridged", device="cpu")
            assert m.lower_better is False
        finally:
            REGISTRY._specs.pop("psnr-bridged")
            REGISTRY._aliases.pop("psnr-bridged")
    finally:
        REGISTRY.register(spec, overwrite=True)
