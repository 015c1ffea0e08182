"""The wavelet-domain VIF core: pyramid against pyrtools, official structure, sizes, gradients, edge cases."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from test_classical import _noisy, _structured

from spips_bench.zoo import vif as vif_module
from spips_bench.zoo.vif import (
    VIF,
    VIF_FULL_SIZE,
    VIF_MIN_SIZE,
    steerable_subbands,
    vif_information,
    vif_subbands_used,
)


# Both sides are float64 sums of the same products; observed 3.6e-13 on values up to 255.
@pytest.mark.parametrize(("h", "w", "levels"), [(64, 64, 3), (72, 80, 4), (97, 131, 4)])
def test_pyramid_equals_pyrtools(h, w, levels) -> None:
    pt = pytest.importorskip("pyrtools")
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 1, h, w, generator=g, dtype=torch.float64) * 255
    # pyrtools (as buildSpyr) builds at most 3 levels at 64 px; its 4th would need lofilt on 8 px
    pyr = pt.pyramids.SteerablePyramidSpace(img[0, 0].numpy(), height=levels, order=5, edge_type="reflect1")
    ours = steerable_subbands(img)
    assert len(ours) == 4
    for level in range(levels):
        for k, band in enumerate((0, 3)):
            np.testing.assert_allclose(ours[level][0, k].numpy(), pyr.pyr_coeffs[(level, band)], rtol=0,
                                       atol=1e-9)


def test_subbands_used_by_size() -> None:
    assert [vif_subbands_used(s, s) for s in (49, 64, VIF_FULL_SIZE - 1, VIF_FULL_SIZE, 72, 512)] == [
        6, 6, 6, 8, 8, 8]
    assert vif_subbands_used(384, 64) == 6  # the shorter side decides


def test_64px_drops_only_the_coarsest_level(monkeypatch) -> None:
    # At 64 px the coarsest level's 2x2 blocks are all inside the border crop: the score must equal the
    # one computed when that level is left out explicitly.
    x = _structured(2, 64, seed=2) * 255
    y = _noisy(x / 255, 0.05, seed=3) * 255
    gray_x, gray_y = x[:, :1], y[:, :1]
    full = vif_information(gray_x, gray_y)
    real = vif_module.steerable_subbands
    monkeypatch.setattr(vif_module, "steerable_subbands", lambda img: real(img)[:3])
    three = vif_information(gray_x, gray_y)
    for a, b in zip(full, three, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert (a > 0).all()


def test_vif_on_bapps_patches_agrees_with_pyiqa() -> None:
    # pyiqa's float32 implementation extends the official code to 64 px the same way; float32 rounding
    # bounds the agreement (observed 3e-6).
    pyiqa_vif = pytest.importorskip("pyiqa.archs.vif_arch")
    from spips_bench.zoo.color import rgb_to_gray

    x = _structured(4, 64, seed=4)
    y = _noisy(x, 0.05, seed=5)
    ours = VIF()(y, x)
    gray = [rgb_to_gray(t).float().expand(-1, 3, -1, -1).contiguous() for t in (y, x)]
    theirs = pyiqa_vif.VIF().vif(*gray).to(torch.float64)
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_vif_does_not_import_pyiqa(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # any import of pyiqa now fails
    monkeypatch.setitem(sys.modules, "pyiqa.archs.vif_arch", None)
    x = _structured(1, 64, seed=6)
    assert VIF()(_noisy(x, 0.05, seed=7), x).item() > 0


def test_missing_pyrtools_is_a_clear_error(monkeypatch) -> None:
    vif_module._sp5_factors.cache_clear()
    monkeypatch.setitem(sys.modules, "pyrtools", None)
    x = _structured(1, 64, seed=8)
    try:
        with pytest.raises(ImportError, match="pip install pyrtools"):
            VIF()(x, x)
    finally:
        monkeypatch.undo()
        vif_module._sp5_factors.cache_clear()


def test_identity_batching_and_dtypes() -> None:
    x = _structured(3, 72, seed=9)
    y = _noisy(x, 0.08, seed=10)
    metric = VIF()
    torch.testing.assert_close(metric(x, x), torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)
    batched = metric(y, x)
    single = torch.cat([metric(y[i : i + 1], x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-12, rtol=0)
    # float32 input: the same 8-bit levels, the same float64 core
    lo = metric(y.float(), x.float())
    assert lo.dtype == torch.float32
    torch.testing.assert_close(lo.double(), batched, atol=1e-6, rtol=0)
    assert metric(y.to(torch.bfloat16), x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_min_size_and_contrast() -> None:
    assert VIF().min_size == VIF_MIN_SIZE == 49
    x = _structured(1, 64, seed=11)
    enhanced = ((x - 0.5) * 1.3 + 0.5).clamp(0, 1)
    assert VIF()(enhanced, x).item() > 1.0  # contrast enhancement adds "information"
    assert VIF()(_noisy(x, 0.2, seed=12), x).item() < VIF()(_noisy(x, 0.05, seed=12), x).item()


def test_flat_reference_is_nan_not_an_error() -> None:
    # No information in the reference: VIF's denominator is 0, the score undefined (nan; the runner
    # stores it as nan and excludes it from statistics).
    flat = torch.full((1, 3, 64, 64), 0.5, dtype=torch.float64)
    x = _structured(1, 64, seed=13)
    out = VIF()(x, flat)
    assert torch.isnan(out).all()
    assert VIF()(flat, x).item() == pytest.approx(0.0, abs=1e-12)  # flat distorted image: no information kept


def test_luma_option_has_correct_gradients() -> None:
    # Directional derivative of VIF(color="y") against a central difference, in float64.
    x = _structured(1, 64, seed=14)
    y = _noisy(x, 0.05, seed=15).clamp(0.02, 0.98)  # away from the clamp, so that y + t d stays in range
    d = torch.randn(y.shape, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    metric = VIF(color="y")
    assert metric.differentiable
    yy = y.clone().requires_grad_(True)
    metric(yy, x).sum().backward()
    assert yy.grad is not None and torch.isfinite(yy.grad).all()
    analytic = (yy.grad * d).sum().item()
    t = 1e-6
    numeric = (metric(y + t * d, x) - metric(y - t * d, x)).item() / (2 * t)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-8)
    assert abs(analytic) > 1e-3


def test_convolution_path_for_large_images_equals_matrix_path(monkeypatch) -> None:
    x = _structured(2, 72, seed=17)
    y = _noisy(x, 0.05, seed=18)
    matrices = VIF()(y, x)
    monkeypatch.setattr(vif_module, "_MATRIX_MAX", 16)  # every filter through conv2d
    torch.testing.assert_close(VIF()(y, x), matrices, atol=1e-12, rtol=0)
