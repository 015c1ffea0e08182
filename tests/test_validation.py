"""Input validation: every bad input raises TypeError/ValueError naming the value and the fix."""

from __future__ import annotations

import pytest
import torch

from spips_bench.validation import validate_image_batch, validate_pair


def test_accepts_valid_pair() -> None:
    x = torch.rand(2, 3, 16, 16)
    validate_pair(x, x.clone(), min_size=16)


@pytest.mark.parametrize(
    ("x", "exc", "pattern"),
    [
        (torch.rand(3, 16, 16), ValueError, r"4 dimensions.*\(3, 16, 16\).*unsqueeze"),
        (torch.rand(1, 1, 16, 16), ValueError, r"3 \(RGB\) channels.*got 1"),
        (torch.rand(1, 4, 16, 16), ValueError, r"got 4.*x\[:, :3\]"),
        (torch.randint(0, 255, (1, 3, 16, 16), dtype=torch.uint8), TypeError, r"torch.uint8.*/ 255"),
        (torch.rand(1, 3, 16, 16) * 255, ValueError, r"outside \[0, 1\]; divide by 255"),
        (torch.rand(1, 3, 16, 16) * 2 - 1, ValueError, r"outside \[0, 1\]; map \[-1, 1\]"),
        (torch.full((1, 3, 16, 16), float("nan")), ValueError, r"768 NaN or Inf"),
        (torch.rand(1, 3, 4, 16), ValueError, r"4x16 pixels, smaller than .* 8x8"),
        (torch.rand(0, 3, 16, 16), ValueError, r"empty batch"),
        ([[0.0]], TypeError, r"torch.Tensor.*list"),
    ],
)
def test_rejects(x: object, exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        validate_image_batch(x, name="dist", min_size=8)


def test_pair_mismatches() -> None:
    a = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"same shape.*\(1, 3, 16, 16\) and \(1, 3, 16, 8\)"):
        validate_pair(a, torch.rand(1, 3, 16, 8))
    with pytest.raises(TypeError, match="float64"):
        validate_pair(a, a.double())
    meta = torch.rand(1, 3, 16, 16, device="meta")
    with pytest.raises(ValueError, match=r"dist is on cpu and ref on meta"):
        validate_pair(a, meta)


def test_metric_forward_validates() -> None:
    import spips_bench

    m = spips_bench.create_metric("psnr")
    with pytest.raises(ValueError, match="outside"):
        m(torch.rand(1, 3, 16, 16) * 255, torch.rand(1, 3, 16, 16))
