"""Metrics as losses: the `differentiable` metadata, the zero-gradient warning, half/bfloat16 modules."""

from __future__ import annotations

import re
import tomllib
import warnings
from pathlib import Path

import pytest
import torch

from spips_bench import create_metric, get_spec
from spips_bench.registry import load_cards
from spips_bench.zoo.dists import DISTS
from spips_bench.zoo.lpips import LPIPS
from spips_bench.zoo.psnr import PSNR
from spips_bench.zoo.spips.model import SPIPS
from spips_bench.zoo.ssim import MSSSIM, SSIM
from spips_bench.zoo.stlpips import STLPIPS
from spips_bench.zoo.vif import VIF, VIFp

ROOT = Path(__file__).parents[1]
CARDS = ROOT / "spips_bench" / "cards"


def _pair(n: int = 2, size: int = 64, seed: int = 0, sigma: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)
    ref = torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)
    ref = (0.7 * ref + 0.3 * torch.rand(n, 3, size, size, generator=g)).clamp(0.05, 0.95)
    dist = (ref + sigma * torch.randn(ref.shape, generator=g)).clamp(0.0, 1.0)
    return dist, ref


# -- metadata ---------------------------------------------------------------------------------------

def test_every_card_states_differentiable_and_matches_its_class() -> None:
    from spips_bench.registry import accepts_option

    for path in sorted(CARDS.glob("*.toml")):
        for name, table in tomllib.loads(path.read_text(encoding="utf-8")).items():
            assert isinstance(table.get("differentiable"), bool), f"{path.name}: {name} lacks differentiable"
    for spec in load_cards():
        # random trunks where the ImageNet weights are absent: differentiability does not depend on them
        extra = {"pretrained": False} if spec.missing_weights() and accepts_option(spec, "pretrained") else {}
        metric = spec.load_class()(**spec.options, **extra)
        assert metric.differentiable is spec.differentiable, spec.name


def test_differentiable_values_of_the_zoo() -> None:
    rounding = {"ssim", "ms-ssim", "ms-ssim-wtd-sum", "vif"}
    for spec in load_cards():
        assert spec.differentiable is (spec.name not in rounding), spec.name


# -- the rounding defaults: zero gradient, one warning naming the option ----------------------------

@pytest.mark.parametrize("name", ["ssim", "ms-ssim", "ms-ssim-wtd-sum", "vif"])
def test_rounding_default_warns_once_and_names_the_differentiable_option(name: str) -> None:
    metric = create_metric(name)
    assert not metric.differentiable
    dist, ref = _pair()
    dist = dist.double().requires_grad_(True)
    with pytest.warns(UserWarning, match=r"gradient .* is exactly zero.*color='y'") as record:
        metric(dist, ref.double()).sum().backward()
    assert record[0].filename == __file__  # points at the caller, not into the zoo
    assert dist.grad is not None and torch.count_nonzero(dist.grad) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric(dist, ref.double())  # once per instance
        create_metric(name)(dist.detach(), ref.double())  # no grad needed: no warning
        with torch.no_grad():
            create_metric(name)(dist, ref.double())


def test_psnr_on_rounded_gray_is_flagged() -> None:
    metric = PSNR(color="matlab-gray")
    assert not metric.differentiable and PSNR().differentiable
    dist, ref = _pair()
    with pytest.warns(UserWarning, match="color='rgb'"):
        metric(dist.requires_grad_(True), ref)


@pytest.mark.parametrize("metric", [PSNR(), SSIM(color="y"), SSIM(color="rgb"), MSSSIM(color="y"),
                                    MSSSIM(color="rgb", combine="weighted-sum"), VIF(color="y"), VIFp()],
                         ids=lambda m: f"{m.name}-{getattr(m, 'color', '')}")
def test_differentiable_options_give_real_gradients_silently(metric) -> None:
    assert metric.differentiable
    dist, ref = _pair()
    dist = dist.double().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric(dist, ref.double()).sum().backward()
    assert dist.grad is not None and torch.isfinite(dist.grad).all() and dist.grad.abs().sum() > 0


@pytest.mark.parametrize(("build", "size"), [(lambda: SSIM(color="y"), 59), (lambda: MSSSIM(color="y"), 61),
                                             (lambda: VIF(color="y"), 67),
                                             (lambda: SPIPS("alex", streams=("traditional",)), 71)],
                         ids=["ssim", "ms-ssim", "vif", "spips-traditional"])
def test_gradients_after_scoring_in_inference_mode(build, size: int) -> None:
    # The filters cache their matrices per image size; one first built while scoring under
    # torch.inference_mode() (as the runner scores) must still serve a loss computed afterwards.
    metric = build()
    dist, ref = _pair(size=size)  # a size no other test uses: the matrices are built here, in inference mode
    with torch.inference_mode():
        metric(dist, ref)
    dist = dist.clone().requires_grad_(True)
    metric(dist, ref).sum().backward()
    assert dist.grad is not None and torch.isfinite(dist.grad).all() and dist.grad.abs().sum() > 0


# -- deep metrics: gradients and reduced-precision modules --------------------------------------------

def _deep(name: str) -> torch.nn.Module:
    # ImageNet trunks are not downloadable here: LPIPS and DISTS run on a random trunk (the dtype path
    # is the same); ST-LPIPS and SPIPS on the shift-tolerant AlexNet use the real trained networks.
    return {"lpips": lambda: LPIPS("alex", pretrained=False), "dists": lambda: DISTS(pretrained=False),
            "stlpips": lambda: STLPIPS("alex"), "spips": lambda: SPIPS("alex-st")}[name]()


@pytest.mark.parametrize("name", ["lpips", "dists", "stlpips", "spips"])
def test_deep_metrics_are_differentiable(name: str) -> None:
    metric = _deep(name)
    assert metric.differentiable
    dist, ref = _pair()
    dist.requires_grad_(True)
    metric(dist, ref).sum().backward()
    assert dist.grad is not None and torch.isfinite(dist.grad).all() and dist.grad.abs().sum() > 0


# Relative deviation from the float32 module on clearly distorted pairs. With the trained ST networks:
# observed 1.4e-3 (ST-LPIPS) and 2.4e-3 (SPIPS) in bfloat16, 5e-5 and 5.5e-4 in float16; the bounds
# leave 4x or more for other CPU kernels. Random trunks amplify rounding (observed up to 17% for LPIPS),
# so there only finiteness, the dtype and a loose bound are asserted.
_BOUND = {("stlpips", torch.bfloat16): 1e-2, ("stlpips", torch.float16): 2e-3,
          ("spips", torch.bfloat16): 2e-2, ("spips", torch.float16): 5e-3}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["lpips", "dists", "stlpips", "spips"])
def test_reduced_precision_modules_score(name: str, dtype: torch.dtype) -> None:
    dist, ref = _pair(seed=1, sigma=0.2)  # clearly visible noise: scores of a typical size
    full = _deep(name)(dist, ref)
    low = _deep(name).to(dtype)
    assert next(low.parameters()).dtype == dtype
    for inputs in ((dist, ref), (dist.to(dtype), ref.to(dtype))):  # float32 or matching inputs
        out = low(*inputs)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        rel = ((out - full).abs() / full.abs()).max().item()
        assert rel <= _BOUND.get((name, dtype), 0.5), f"{name} {dtype}: relative deviation {rel:.2e}"
    # and the reduced-precision module still gives gradients
    x = dist.to(dtype).requires_grad_(True)
    low(x, ref.to(dtype)).sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


def test_spips_fast_path_in_bfloat16() -> None:
    metric = SPIPS("alex-st").bfloat16()
    dist, ref = _pair(seed=2)
    fast = metric.compare(metric.features(dist), metric.features(ref))
    torch.testing.assert_close(fast, metric(dist, ref), atol=1e-6, rtol=1e-5)
    assert metric.stream_maps(dist, ref)["semantic"].dtype == torch.float32


# -- the README example --------------------------------------------------------------------------------

def test_readme_loss_example_runs_and_lowers_the_loss() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using a metric as a loss", 1)
    assert len(section) == 2, "README.md lacks its 'Using a metric as a loss' section"
    match = re.search(r"```python\n(.*?)```", section[1], flags=re.S)
    assert match, "the section has no python example"
    scope: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the example uses differentiable options only
        exec(compile(match.group(1), "README.md", "exec"), scope)  # the repository's own README
    losses = scope["losses"]
    assert isinstance(losses, list) and losses[-1] < losses[0]
    assert get_spec("ssim").differentiable is False
