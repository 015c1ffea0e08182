"""SPIPS: the traditional maps against piq and closed forms, the model's contract, ablations, checkpoints.

Real-photograph tests use the shift-tolerant AlexNet of ST-LPIPS (``alex-st``), whose trained weights
install from PyPI, so they run offline; structural tests use random trunks (``pretrained=False``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
from pathlib import Path

import numpy as np
import piq
import pytest
import torch
import torch.nn.functional as F

from spips_bench.errors import WeightsIntegrityError
from spips_bench.zoo.filters import KERNEL_SIZE, gaussian_filter_valid, gaussian_window_1d
from spips_bench.zoo.spips.model import SPIPS, SpipsFeatures
from spips_bench.zoo.spips.traditional import TraditionalMaps, local_statistics, ms_ssim_scale_maps

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, piq's defaults


def _photo(name: str, size: int = 64) -> torch.Tensor:
    """A real photograph from scikit-image, centre-cropped square and area-resized to ``size``."""
    from skimage import data

    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    h, w = arr.shape[:2]
    s = min(h, w)
    arr = arr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s, :3]
    t = torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return F.interpolate(t, size=(size, size), mode="area").clamp(0, 1)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (x[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out).permute(2, 0, 1)[None]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # 64-px batches are too small for intra-op threads to pay off, and one thread does not collapse
    # when the machine's cores are oversubscribed (elementwise ops measured 20x slower with two).
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return torch.cat([_photo("astronaut"), _photo("chelsea"), _photo("coffee")])


@pytest.fixture(scope="module")
def spips_st() -> SPIPS:
    return SPIPS("alex-st")


@pytest.fixture(scope="module")
def spips_rand() -> SPIPS:
    torch.manual_seed(0)
    return SPIPS("alex", pretrained=False)


# -- traditional stream: against piq and closed forms ------------------------------------------------

def test_separable_band_filter_equals_piq_2d_window() -> None:
    x = torch.rand(2, 6, 40, 37, generator=torch.Generator().manual_seed(1))
    g = gaussian_window_1d(dtype=torch.float32)
    k2 = (g[:, None] * g[None, :]).expand(6, 1, KERNEL_SIZE, KERNEL_SIZE)
    ref = F.conv2d(x, k2, groups=6)
    # piq builds its window as exp(-x^2 / 2 sigma^2) normalised; the outer product of ours must match.
    from piq.functional import gaussian_filter

    piq_window = gaussian_filter(KERNEL_SIZE, 1.5, dtype=torch.float32)[0]
    torch.testing.assert_close(k2[0, 0], piq_window, atol=1e-7, rtol=0)
    torch.testing.assert_close(gaussian_filter_valid(x), ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("size", [64, 96])
def test_ssim_map_mean_equals_piq(size: int, photos: torch.Tensor) -> None:
    ref = photos
    dist = (ref + 0.08 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    if size != 64:
        ref, dist = (F.interpolate(t, size=(size, size), mode="bilinear") for t in (ref, dist))
    ssim, _, _ = local_statistics(dist, ref)
    expected = piq.ssim(dist, ref, data_range=1.0, reduction="none", downsample=False)
    # float32 rounding of the moments; piq uses a 2-D convolution, ours two banded products
    torch.testing.assert_close(ssim.mean(dim=(1, 2, 3)), expected, atol=2e-5, rtol=0)


def test_stream_statistics_are_the_zoo_ssim_maps(photos: torch.Tensor) -> None:
    # The traditional stream's SSIM maps are the zoo's (one engine, checked against official values),
    # its squared-error map the window mean of (x - y)^2.
    from spips_bench.zoo.ssim import ssim_maps

    dist = (photos + 0.1 * torch.randn(photos.shape, generator=torch.Generator().manual_seed(11))).clamp(0, 1)
    ssim, cs, mse = local_statistics(dist, photos)
    zoo_ssim, zoo_cs = ssim_maps(dist, photos)
    torch.testing.assert_close(ssim, zoo_ssim, atol=1e-7, rtol=0)
    torch.testing.assert_close(cs, zoo_cs, atol=1e-7, rtol=0)
    k2 = gaussian_window_1d(dtype=torch.float64)
    k2 = torch.outer(k2, k2).expand(3, 1, KERNEL_SIZE, KERNEL_SIZE)
    direct = F.conv2d((dist.double() - photos.double()) ** 2, k2, groups=3)
    torch.testing.assert_close(mse.double(), direct, atol=1e-7, rtol=0)


def test_ms_ssim_scale_maps_reproduce_piq() -> None:
    gen = torch.Generator().manual_seed(3)
    ref = torch.rand(2, 3, 176, 170, generator=gen)  # odd/even sides exercise piq's padding rule
    ref = F.avg_pool2d(F.pad(ref, [2, 2, 2, 2], mode="reflect"), 5, stride=1)  # some structure
    dist = (ref + 0.05 * torch.randn(ref.shape, generator=gen)).clamp(0, 1)
    maps, sizes, _, _ = ms_ssim_scale_maps(dist, ref, 5)
    assert sizes[0] == (176, 170) and len(maps) == 5
    means = torch.stack([m.mean(dim=(2, 3)) for m in maps])  # (scales, N, C)
    w = torch.tensor(MS_SSIM_WEIGHTS).view(-1, 1, 1)
    ours = torch.prod(torch.relu(means) ** w, dim=0).mean(dim=1)
    expected = piq.multi_scale_ssim(dist, ref, data_range=1.0, reduction="none")
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=0)


def test_psnr_and_ssim_maps_closed_form_on_flat_images() -> None:
    # Flat images: the window-averaged squared error is d^2 and SSIM is the luminance term alone.
    d, mu = 0.1, 0.4
    x = torch.full((1, 3, 48, 48), mu + d)
    y = torch.full((1, 3, 48, 48), mu)
    q = TraditionalMaps(psnr_max_db=60.0)(x, y)
    assert q.shape == (1, 9, 48, 48)
    psnr = -10 * math.log10(d * d + 1e-6)
    torch.testing.assert_close(q[:, :3], torch.full_like(q[:, :3], 1 - psnr / 60), atol=1e-5, rtol=0)
    c1 = 0.01**2
    s = (2 * mu * (mu + d) + c1) / (mu**2 + (mu + d) ** 2 + c1)
    # float32 moments round at ~1e-9 against c2 = 9e-4 in the contrast-structure term: 1e-5 bounds that
    torch.testing.assert_close(q[:, 3:6], torch.full_like(q[:, :3], (1 - s) / 2), atol=1e-5, rtol=0)
    # contrast-structure is 1 on flat images; the coarsest scale carries the luminance term
    torch.testing.assert_close(q[:, 6:8], torch.zeros_like(q[:, 6:8]), atol=5e-5, rtol=0)
    # float32 variances (E[x^2] - mu^2) are off by ~1e-7 against c2 = 9e-4: 5e-5 bounds that rounding
    torch.testing.assert_close(q[:, 8], torch.full_like(q[:, 8], (1 - s) / 2), atol=5e-5, rtol=0)


def test_traditional_maps_zero_for_identical_and_luma_option(photos: torch.Tensor) -> None:
    assert float(TraditionalMaps()(photos, photos).abs().max()) == 0.0
    luma = TraditionalMaps(color="luma")
    assert luma.channels == 5 and luma(photos, photos.flip(-1)).shape == (3, 5, 64, 64)
    assert float(luma(photos, photos).abs().max()) == 0.0


def test_traditional_maps_reject_small_images() -> None:
    with pytest.raises(ValueError, match="41x41"):
        TraditionalMaps()(torch.rand(1, 3, 40, 64), torch.rand(1, 3, 40, 64))


# -- the model's contract ---------------------------------------------------------------------------

def test_shapes_gradients_and_identity(spips_rand: SPIPS) -> None:
    gen = torch.Generator().manual_seed(4)
    ref = torch.rand(3, 3, 64, 64, generator=gen)
    dist = (ref + 0.1 * torch.randn(ref.shape, generator=gen)).clamp(0, 1).requires_grad_(True)
    s = spips_rand.score(dist, ref)
    assert s.shape == (3,) and s.dtype == torch.float32 and bool((s > 0).all())
    s.sum().backward()
    assert dist.grad is not None and bool(torch.isfinite(dist.grad).all())
    assert float(dist.grad.abs().sum()) > 0
    with torch.no_grad():
        same = spips_rand(ref, ref)
    assert float(same.abs().max()) == 0.0  # the minimum: every stream map is >= 0


def test_identity_is_minimum_on_photos(spips_st: SPIPS, photos: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        base = spips_st(photos, photos)
        for _ in range(3):
            pert = (photos + 0.01 * torch.randn(photos.shape, generator=gen)).clamp(0, 1)
            assert bool((spips_st(pert, photos) > base).all())


@pytest.mark.parametrize("kind", ["noise", "blur", "jpeg"])
def test_monotone_in_distortion_strength(kind: str, spips_st: SPIPS, photos: torch.Tensor) -> None:
    from torchvision.transforms.functional import gaussian_blur

    gen = torch.Generator().manual_seed(6)
    noise = torch.randn(photos.shape, generator=gen)
    levels = {"noise": [0.01, 0.03, 0.08, 0.2], "blur": [0.5, 1.0, 2.0, 4.0], "jpeg": [90, 50, 20, 5]}[kind]
    scores = []
    with torch.no_grad():
        for level in levels:
            if kind == "noise":
                dist = (photos + level * noise).clamp(0, 1)
            elif kind == "blur":
                dist = gaussian_blur(photos, kernel_size=2 * math.ceil(3 * level) + 1, sigma=level)
            else:
                dist = torch.cat([_jpeg(photos[i:i + 1], int(level)) for i in range(len(photos))])
            scores.append(spips_st(dist, photos))
    s = torch.stack(scores)  # (levels, images)
    assert bool((s[1:] > s[:-1]).all()), f"{kind}: scores not increasing with strength:\n{s}"


def test_features_compare_equals_forward_and_batching(spips_st: SPIPS, photos: torch.Tensor) -> None:
    dist = photos.flip(-1)
    with torch.no_grad():
        full = spips_st(dist, photos)
        fast = spips_st.compare(spips_st.features(dist), spips_st.features(photos))
        one_by_one = torch.cat([spips_st(dist[i:i + 1], photos[i:i + 1]) for i in range(len(photos))])
    torch.testing.assert_close(fast, full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(one_by_one, full, atol=1e-6, rtol=1e-5)
    assert spips_st.has_features


def test_symmetric(spips_st: SPIPS, photos: torch.Tensor) -> None:
    dist = photos.flip(-2)
    with torch.no_grad():
        torch.testing.assert_close(spips_st(dist, photos), spips_st(photos, dist), atol=1e-6, rtol=1e-5)


def test_bf16_autocast_close_to_float32(spips_st: SPIPS, photos: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(7)
    dist = (photos + 0.05 * torch.randn(photos.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        f32 = spips_st(dist, photos)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            b16 = spips_st(dist, photos)
    assert b16.dtype == torch.float32
    # The traditional stream always runs in float32; bf16 (8-bit mantissa) backbone activations move the
    # deep streams by about 1%, so 3% of the score bounds the difference with margin.
    torch.testing.assert_close(b16, f32, rtol=0.03, atol=1e-4)


def test_ablation1_ignores_semantic_features() -> None:
    torch.manual_seed(0)
    full, abla1 = SPIPS("alex", pretrained=False), SPIPS("alex", pretrained=False,
                                                          streams=("traditional", "perceptual"))
    abla1.trunk.load_state_dict(full.trunk.state_dict())
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fx, fy = full.features(x), full.features(y)
        changed = SpipsFeatures(fx.image, [*fx.layers[:-2], *(f + 1.0 for f in fx.layers[-2:])])
        assert not torch.allclose(full.compare(changed, fy), full.compare(fx, fy))
        torch.testing.assert_close(abla1.compare(changed, fy), abla1.compare(fx, fy), atol=0, rtol=0)
    assert abla1.name == "spips-abla1" and abla1.lambdas.numel() == 2


def test_ablation2_ignores_traditional_maps() -> None:
    torch.manual_seed(0)
    full, abla2 = SPIPS("alex", pretrained=False), SPIPS("alex", pretrained=False,
                                                          streams=("perceptual", "semantic"))
    abla2.trunk.load_state_dict(full.trunk.state_dict())
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fx, fy = full.features(x), full.features(y)
        other_image = SpipsFeatures(torch.rand(2, 3, 64, 64), fx.layers)  # same deep features
        assert not torch.allclose(full.compare(other_image, fy), full.compare(fx, fy))
        torch.testing.assert_close(abla2.compare(other_image, fy), abla2.compare(fx, fy), atol=0, rtol=0)
    assert abla2.name == "spips-abla2" and abla2.min_size == 32


def test_mlp_fusion_starts_as_the_equal_weight_sum(spips_st: SPIPS, photos: torch.Tensor) -> None:
    mlp = SPIPS("alex-st", fusion="mlp")
    dist = photos.flip(-1)
    with torch.no_grad():
        torch.testing.assert_close(mlp(dist, photos), spips_st(dist, photos), atol=1e-6, rtol=1e-5)
        assert float(mlp(photos, photos).abs().max()) == 0.0


def test_plain_features_option(photos: torch.Tensor) -> None:
    m = SPIPS("alex-st", feature_norm="plain")
    with torch.no_grad():
        s = m(photos.flip(-1), photos)
    assert s.shape == (3,) and bool(torch.isfinite(s).all()) and bool((s > 0).all())


@pytest.mark.parametrize("kwargs, match", [
    ({"backbone": "resnet"}, "backbone"), ({"streams": ("semantic", "texture")}, "streams"),
    ({"streams": ()}, "streams"), ({"feature_norm": "l1"}, "feature_norm"), ({"fusion": "max"}, "fusion"),
    ({"color": "lab"}, "color"), ({"ms_scales": 0}, "ms_scales"), ({"psnr_max_db": -1}, "psnr_max_db"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_options_are_named(kwargs: dict, match: str) -> None:
    kwargs = {"pretrained": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        SPIPS(**kwargs)


# -- registry and checkpoints ---------------------------------------------------------------------

def test_registered_variants_are_marked_untrained() -> None:
    import spips_bench

    names = set(spips_bench.list_metrics())
    expected = {"spips", "spips-vgg", "spips-squeeze", "spips-alex-st", "spips-vgg-st", "spips-abla1",
                "spips-abla2", "spips-alex-st-abla1", "spips-alex-st-abla2"}
    assert expected <= names
    for name in expected:
        spec = spips_bench.get_spec(name)
        assert spec.trained is False and spec.higher_is_better is False
    m = spips_bench.create_metric("spips-alex-st-abla1")
    assert m.trained is False and m.name == "spips-alex-st-abla1"
    assert m.streams == ("traditional", "perceptual")


def _randomise_heads(m: SPIPS, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.head_parameters():
            p.copy_(torch.rand(p.shape, generator=gen))


def test_checkpoint_round_trip(tmp_path: Path, photos: torch.Tensor) -> None:
    import spips_bench

    m = SPIPS("alex-st")
    _randomise_heads(m, 8)
    path = m.save_checkpoint(tmp_path / "heads.safetensors")
    loaded = spips_bench.create_metric("spips-alex-st", checkpoint=path)
    assert loaded.trained is True
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    dist = photos.flip(-1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(dist, photos), m(dist, photos), atol=0, rtol=0)
        assert not torch.allclose(loaded(dist, photos), SPIPS("alex-st")(dist, photos))
    # torch.save zip with the same content, read with weights_only=True
    zpath = tmp_path / "heads.pt"
    torch.save({"state_dict": m.trainable_state_dict(), "config": json.dumps(m.config())}, zpath)
    z = SPIPS("alex-st", checkpoint=zpath)
    with torch.no_grad():
        torch.testing.assert_close(z(dist, photos), m(dist, photos), atol=0, rtol=0)


def test_checkpoint_of_another_configuration_is_refused(tmp_path: Path) -> None:
    abla = SPIPS("alex", pretrained=False, streams=("traditional", "perceptual"))
    path = abla.save_checkpoint(tmp_path / "abla1.safetensors")
    with pytest.raises(WeightsIntegrityError, match="streams"):
        SPIPS("alex", pretrained=False, checkpoint=path)
    other = SPIPS("vgg", pretrained=False).save_checkpoint(tmp_path / "vgg.safetensors")
    with pytest.raises(WeightsIntegrityError, match="backbone"):
        SPIPS("alex", pretrained=False, checkpoint=other)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_poisoned_pickles_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"logits": _Payload(marker)}))
    zipped = tmp_path / "zipped.pt"
    torch.save({"logits": _Payload(marker)}, zipped)
    assert not marker.exists()
    for path in (raw, zipped):
        with pytest.raises(WeightsIntegrityError, match="refused"):
            SPIPS("alex", pretrained=False, checkpoint=path)
        assert not marker.exists(), f"{path.name}: the pickle payload was executed"
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsIntegrityError):
        SPIPS("alex", pretrained=False, checkpoint=junk)


# -- the explanation figure ----------------------------------------------------------------------------

def test_explain_contributions_add_up_and_figure_is_written(spips_st: SPIPS, photos: torch.Tensor,
                                                           tmp_path: Path) -> None:
    from spips_bench.zoo.spips.explain import explain

    ref = photos[:1]
    dists = [(ref + 0.05 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(9))).clamp(0, 1),
             F.avg_pool2d(F.pad(ref, [1, 1, 1, 1], mode="replicate"), 3, stride=1)]
    ex = explain(spips_st, ref, dists, out=tmp_path / "fig.png")
    for score, rows in zip(ex.scores, ex.streams, strict=True):
        assert [r.stream for r in rows] == ["traditional", "perceptual", "semantic"]
        assert sum(r.contribution for r in rows) == pytest.approx(score, rel=1e-5)
    with torch.no_grad():
        maps = spips_st.stream_maps(dists[0], ref)
    # the traditional map's mean is exactly the stream value; the deep maps are resized, hence close
    assert float(maps["traditional"].mean()) == pytest.approx(ex.streams[0][0].mean, rel=1e-5)
    assert float(maps["perceptual"].mean()) == pytest.approx(ex.streams[0][1].mean, rel=0.15)
    from PIL import Image

    with Image.open(ex.figure) as im:
        assert im.size[0] > 600 and im.size[1] > 500
    assert ex.trained is False


def test_explain_cli(tmp_path: Path, photos: torch.Tensor, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from spips_bench.cli import main

    paths = []
    for i, img in enumerate([photos[0], photos[0].flip(-1), (photos[0] * 0.9)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(p)
        paths.append(str(p))
    out = tmp_path / "explain.png"
    assert main(["explain", *paths, "--metric", "spips-alex-st-abla1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "untrained" in text and "image1" in text
    assert main(["explain", *paths, paths[0], "--metric", "spips-alex-st", "--out", str(out)]) == 2
