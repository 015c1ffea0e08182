"""SSIM's filtering paths (band matrices, grouped convolutions, plane chunks) give the same values.

The band-matrix path without chunks is the reference: forcing it (a huge ``CONV_MIN`` and ``CHUNK_BYTES``)
must change no score by more than 1e-6, at the sizes around the switch, on odd sides, in float32 and
float64, and gradients must still flow through the convolution and chunked paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from spips_bench.perf.common import make_images
from spips_bench.zoo import filters
from spips_bench.zoo import ssim as ssim_module
from spips_bench.zoo.spips.traditional import TraditionalMaps
from spips_bench.zoo.ssim import MSSSIM, SSIM, ssim_maps


def _reference(monkeypatch: pytest.MonkeyPatch, fn: Callable[[], Any]) -> Any:
    """``fn()`` computed on the band-matrix path, all planes at once."""
    with monkeypatch.context() as m:
        m.setattr(filters, "CONV_MIN", 10**9)
        m.setattr(ssim_module, "CHUNK_BYTES", 2**62)
        return fn()


def _images(h: int, w: int, n: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ref, p0, _ = make_images(max(h, w), n, seed=seed)
    return p0[..., :h, :w].to(dtype).contiguous(), ref[..., :h, :w].to(dtype).contiguous()


def test_the_switch_picks_convolutions_for_large_float32_planes_on_cpu() -> None:
    side = filters.CONV_MIN
    assert not filters.uses_convolution(side, side, torch.float32, "cpu")  # BAPPS size: band matrices
    assert filters.uses_convolution(side + 1, 40, torch.float32, "cpu")
    assert not filters.uses_convolution(256, 256, torch.float64, "cpu")  # no float64 oneDNN convolutions
    assert not filters.uses_convolution(256, 256, torch.float32, "meta")  # GPUs: full-precision matmuls
    assert filters.uses_convolution(filters.BAND_MAX + 1, 16, torch.float64, "cpu")
    assert filters.CONV_MIN >= 64  # 64-px BAPPS patches keep the band-matrix path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("h, w", [(64, 64), (96, 96), (97, 97), (96, 97), (101, 130), (255, 256), (256, 256)])
def test_ssim_maps_equal_the_band_matrix_path(monkeypatch: pytest.MonkeyPatch, h: int, w: int,
                                              dtype: torch.dtype) -> None:
    x, y = _images(h, w, 5, dtype, seed=h * 1000 + w)
    # a small chunk budget, so that 15 planes are cut into several chunks (one of them shorter)
    monkeypatch.setattr(ssim_module, "CHUNK_BYTES", 4 * h * w * x.element_size())
    new_ssim, new_cs = ssim_maps(x, y)
    old_ssim, old_cs = _reference(monkeypatch, lambda: ssim_maps(x, y))
    assert new_ssim.shape == old_ssim.shape == (5, 3, h - 10, w - 10) and new_ssim.dtype == dtype
    assert (new_ssim.mean(dim=(1, 2, 3)) - old_ssim.mean(dim=(1, 2, 3))).abs().max() <= 1e-6
    assert (new_cs.mean(dim=(2, 3)) - old_cs.mean(dim=(2, 3))).abs().max() <= 1e-6
    # per pixel: float32 rounding of variances in flat windows (C2 = 9e-4) allows 1e-3 at most
    assert (new_ssim - old_ssim).abs().max() <= (1e-3 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_metric_scores_equal_the_band_matrix_path(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    x, y = _images(256, 256, 6, dtype, seed=7)
    metrics = [SSIM(color="rgb"), SSIM(), MSSSIM(color="rgb"), MSSSIM(color="y", combine="weighted-sum")]
    for metric in metrics:
        new = metric(x, y)
        old = _reference(monkeypatch, lambda metric=metric: metric(x, y))
        assert (new - old).abs().max() <= 1e-6, metric


def test_traditional_stream_equals_the_band_matrix_path(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _images(200, 200, 4, torch.float32, seed=11)
    stream = TraditionalMaps()
    new = stream(x, y)
    old = _reference(monkeypatch, lambda: stream(x, y))
    assert new.shape == old.shape
    assert (new.mean(dim=(2, 3)) - old.mean(dim=(2, 3))).abs().max() <= 1e-6


def test_gradients_flow_through_convolutions_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _images(128, 128, 3, torch.float32, seed=5)
    monkeypatch.setattr(ssim_module, "CHUNK_BYTES", 2 * 128 * 128 * 4)  # 9 planes in 5 chunks

    def grad() -> torch.Tensor:
        leaf = x.clone().requires_grad_(True)
        ssim_map, cs = ssim_maps(leaf, y)
        (ssim_map.mean() + cs.mean()).backward()
        assert leaf.grad is not None
        return leaf.grad

    new, old = grad(), _reference(monkeypatch, grad)
    assert torch.isfinite(new).all() and new.abs().max() > 0
    assert (new - old).abs().max() <= 1e-6 * max(1.0, float(old.abs().max()))


def test_chunks_follow_the_byte_budget() -> None:
    cpu = torch.device("cpu")
    assert ssim_module._planes_per_chunk(64, 64, 4, cpu) >= 150  # a batch of 50 RGB BAPPS pairs: one chunk
    assert ssim_module._planes_per_chunk(256, 256, 4, cpu) == ssim_module.CHUNK_BYTES // (256 * 256 * 4)
    assert ssim_module._planes_per_chunk(4096, 4096, 8, cpu) == 1
    assert ssim_module._planes_per_chunk(256, 256, 4, torch.device("meta")) > 10**9
