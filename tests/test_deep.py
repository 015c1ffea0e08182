"""LPIPS, DISTS and ST-LPIPS against their reference packages, plus the fast path, autocast and weights.

ImageNet trunks cannot be downloaded here, so LPIPS and DISTS are compared with the *same random trunk*
loaded into both implementations (the linear weights and alpha/beta are the real trained ones). ST-LPIPS
runs with its real trained networks against pyiqa and against the authors' own package.
"""

from __future__ import annotations

import hashlib
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spips_bench import weights
from spips_bench.data.images import read_image
from spips_bench.errors import WeightsIntegrityError, WeightsUnavailableError
from spips_bench.zoo.backbones import TRUNKS, build_trunk
from spips_bench.zoo.dists import DISTS
from spips_bench.zoo.lpips import LPIPS
from spips_bench.zoo.stlpips import STLPIPS

CAL = Path(__file__).parent / "data" / "calibration"
NAMES = ("I03", "I04", "I06", "I08", "I19")


def calibration(size: int | None = 64, crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dist, ref) batches of the five calibration pairs; resized (PIL bilinear) or center-cropped."""
    if not (CAL / "ref" / "I03.png").is_file():
        pytest.skip("tests/data/calibration is missing")

    def load(kind: str) -> torch.Tensor:
        x = torch.stack([read_image(CAL / kind / f"{n}.png", size=size).tensor() for n in NAMES])
        if crop is not None:
            top, left = (x.shape[2] - crop) // 2, (x.shape[3] - crop) // 2
            x = x[:, :, top:top + crop, left:left + crop]
        return x.contiguous()

    return load("dist"), load("ref")


def random_pairs(n: int = 3, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    ref = torch.rand(n, 3, size, size, generator=g)
    # a mix of mild and strong distortions, so that scores spread out
    noise = torch.rand(n, 3, size, size, generator=g) - 0.5
    dist = (ref + noise * torch.linspace(0.05, 1.0, n).view(n, 1, 1, 1)).clamp(0, 1)
    return dist, ref


def _slice_keys(trunk_state: dict[str, torch.Tensor], taps: tuple[int, ...], prefix: str = "slice"
                ) -> dict[str, torch.Tensor]:
    """Our ``features.<i>.*`` keys -> the reference packages' ``slice<k>.<i>.*`` layout."""
    bounds = (-1, *taps)
    out = {}
    for key, value in trunk_state.items():
        i = int(key.split(".")[1])
        k = next(j for j in range(1, len(bounds)) if bounds[j - 1] < i <= bounds[j])
        out[f"{prefix}{k}.{key[len('features.'):]}"] = value
    return out


# -- LPIPS ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["alex", "vgg", "squeeze"])
def lpips_pair(request: pytest.FixtureRequest) -> tuple[LPIPS, object]:
    lpips = pytest.importorskip("lpips")
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    ours = LPIPS(request.param, pretrained=False)
    with pytest.MonkeyPatch.context() as mp:
        # The reference keeps only torchvision's VGG16 `features`; skip building its 120M-parameter
        # classifier (seconds of random initialisation) by handing it torchvision's feature stack alone.
        mp.setattr(lpips.pretrained_networks.tv, "vgg16",
                   lambda pretrained=False, **kw: types.SimpleNamespace(features=make_layers(cfgs["D"])))
        ref = lpips.LPIPS(net=request.param, pretrained=True, pnet_rand=True, verbose=False)
    ref.net.load_state_dict(_slice_keys(ours.trunk.state_dict(), ours.trunk.taps), strict=True)
    # the reference loads its linear weights from its own wheel: ours must hold the same numbers
    for k, lin in enumerate(ours.lins):
        assert torch.equal(lin.weight, getattr(ref, f"lin{k}").model[1].weight)
    return ours, ref


@pytest.mark.parametrize("images", ["random", "calibration"])
def test_lpips_equals_reference_package(lpips_pair: tuple[LPIPS, object], images: str) -> None:
    ours, ref = lpips_pair
    dist, refimg = random_pairs() if images == "random" else calibration(64)
    with torch.no_grad():
        got = ours(dist, refimg)
        want = ref(dist, refimg, normalize=True).flatten()  # type: ignore[operator]
    assert got.shape == (dist.shape[0],) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_lpips_spatial_map_equals_reference(lpips_pair: tuple[LPIPS, object]) -> None:
    ours, ref = lpips_pair
    dist, refimg = random_pairs(2, size=48)
    ref.spatial = True  # type: ignore[attr-defined]  # the reference's switch, read in its forward
    try:
        with torch.no_grad():
            got = ours.spatial_map(dist, refimg)
            want = ref(dist, refimg, normalize=True)  # type: ignore[operator]
    finally:
        ref.spatial = False  # type: ignore[attr-defined]
    assert got.shape == (2, 1, 48, 48)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_lpips_identical_images_score_zero() -> None:
    m = LPIPS("alex", pretrained=False)
    x = random_pairs(2)[1]
    assert torch.all(m(x, x).abs() < 1e-7)


def test_lpips_dropout_key_layout_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The classic pitfall: a checkpoint saved without dropout names its weights lin<k>.model.0.weight;
    # strict=False loading would silently keep random linear weights. Here it is an error.
    good = weights.load_state_dict("lpips-alex")
    bad = {k.replace("model.1", "model.0"): v for k, v in good.items()}
    path = tmp_path / WEIGHTS_NAME
    torch.save(bad, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(weights.WEIGHTS, "lpips-alex",
                        replace(weights.WEIGHTS["lpips-alex"], filename=WEIGHTS_NAME, sha256=sha))
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(tmp_path))
    with pytest.raises(WeightsIntegrityError, match=r"missing \['lin0.model.1.weight'"):
        LPIPS("alex", pretrained=False)


WEIGHTS_NAME = "lpips-alex-test.pth"


def test_lpips_with_extra_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = dict(weights.load_state_dict("lpips-alex"))
    state["lin5.model.1.weight"] = torch.zeros(1, 8, 1, 1)
    path = tmp_path / WEIGHTS_NAME
    torch.save(state, path)
    monkeypatch.setitem(weights.WEIGHTS, "lpips-alex", replace(
        weights.WEIGHTS["lpips-alex"], filename=WEIGHTS_NAME, sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(tmp_path))
    with pytest.raises(WeightsIntegrityError, match="unexpected"):
        LPIPS("alex", pretrained=False)


def test_lpips_offline_without_imagenet_trunk_explains_the_fix(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(weights.ENV_WEIGHTS_DIR, raising=False)
    from spips_bench import create_metric

    with pytest.raises(WeightsUnavailableError) as err:
        create_metric("lpips-vgg", offline=True)
    wf = weights.WEIGHTS["vgg16"]
    assert wf.sha256 in str(err.value) and wf.url and wf.url in str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / wf.filename) in str(err.value)


# -- DISTS ---------------------------------------------------------------------------------------------


def test_dists_equals_reference_package(monkeypatch: pytest.MonkeyPatch) -> None:
    ref_mod = pytest.importorskip("DISTS_pytorch.DISTS_pt")
    torch.manual_seed(0)
    ours = DISTS(pretrained=False)
    # The reference builds torchvision's VGG16 with ImageNet weights (a download) and keeps only its
    # `features`; give it torchvision's randomly initialised VGG16 feature stack instead.
    from torchvision.models.vgg import cfgs, make_layers

    monkeypatch.setattr(ref_mod.models, "vgg16",
                        lambda pretrained=False, **kw: types.SimpleNamespace(features=make_layers(cfgs["D"])))
    ref = ref_mod.DISTS(load_weights=False)
    stage = [(3, 1), (8, 2), (15, 3), (22, 4), (29, 5)]
    state = {f"stage{next(s for last, s in stage if int(k.split('.')[0]) <= last)}.{k}": v
             for k, v in ours.features_net.state_dict().items()}
    ab = weights.load_state_dict("dists")
    state.update(alpha=ab["alpha"], beta=ab["beta"])
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and all(k in ("mean", "std") or k.endswith(".filter") for k in missing)
    for dist, refimg in (random_pairs(2, size=48), calibration(48)):
        with torch.no_grad():
            got = ours(dist, refimg)
            want = ref(refimg, dist)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


# -- ST-LPIPS ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_stlpips_equals_pyiqa_on_calibration_pairs(net: str) -> None:
    arch = pytest.importorskip("pyiqa.archs.stlpips_arch")
    ours = STLPIPS(net)
    with pytest.MonkeyPatch.context() as mp:
        # pyiqa builds a full VGG (with a 100M-parameter classifier) and keeps its `features`: hand it
        # the feature stack from its own make_layers to skip seconds of random initialisation.
        mp.setattr(arch, "vgg16", lambda filter_size=1, pad_more=False, **kw: types.SimpleNamespace(
            features=arch.make_layers(arch.cfg["D"], filter_size=filter_size, pad_more=pad_more)))
        # pyiqa's own model, given the same checkpoint file by path: nothing is downloaded
        ref = arch.STLPIPS(net=net, pretrained_model_path=str(weights.resolve(f"stlpips-{net}")))
    dist, refimg = calibration(64)  # BAPPS protocol size; full resolution in the slow test below
    with torch.no_grad():
        got = ours(dist, refimg)
        want = ref(dist, refimg).flatten()  # pyiqa's default normalize=True: inputs in [0, 1]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert float(got.max()) > 0.05  # a trained metric that sees the distortions


@pytest.mark.slow
def test_stlpips_alex_equals_pyiqa_at_full_resolution() -> None:
    arch = pytest.importorskip("pyiqa.archs.stlpips_arch")
    ours = STLPIPS("alex")
    ref = arch.STLPIPS(net="alex", pretrained_model_path=str(weights.resolve("stlpips-alex")))
    dist, refimg = calibration(size=None)
    with torch.no_grad():
        torch.testing.assert_close(ours(dist, refimg), ref(dist, refimg).flatten(), rtol=0, atol=1e-4)


def test_stlpips_equals_the_authors_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # stlpips_pytorch imports IPython and torchsummary for debugging aids only; stand-ins let it load.
    if weights.package_path(weights.WEIGHTS["stlpips-alex"]) is None:
        pytest.skip("stlpips-pytorch not installed")
    ipython = types.ModuleType("IPython")
    ipython.embed = lambda *a, **k: None  # type: ignore[attr-defined]
    summary = types.ModuleType("torchsummary")
    summary.summary = lambda *a, **k: None  # type: ignore[attr-defined]
    for name, mod in (("IPython", ipython), ("torchsummary", summary)):
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, mod)
    from stlpips_pytorch import stlpips

    ref = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    ours = STLPIPS("alex")
    dist, refimg = calibration(size=64)
    with torch.no_grad():
        torch.testing.assert_close(ours(dist, refimg), ref(dist, refimg, normalize=True).flatten(),
                                   rtol=0, atol=1e-5)


def test_stlpips_one_pixel_shift_costs_less_than_visible_noise() -> None:
    # Sanity check of the trained network's purpose: shifting an image by one pixel costs less than
    # clearly visible noise (uniform, +-0.15) on the same image.
    m = STLPIPS("alex")
    _, ref = calibration(size=None, crop=65)
    shifted = ref[:, :, :, 1:]
    base = ref[:, :, :, :-1]
    g = torch.Generator().manual_seed(3)
    noisy = (base + 0.3 * (torch.rand(base.shape, generator=g) - 0.5)).clamp(0, 1)
    with torch.no_grad():
        assert torch.all(m(shifted, base) < m(noisy, base))


# -- shared behaviour --------------------------------------------------------------------------------


def _metrics() -> list[torch.nn.Module]:
    torch.manual_seed(1)
    return [LPIPS("alex", pretrained=False), DISTS(pretrained=False), STLPIPS("alex")]


@pytest.fixture(scope="module")
def metrics() -> list[torch.nn.Module]:
    return _metrics()


def test_features_compare_equals_forward_batched_and_swapped(metrics: list[torch.nn.Module]) -> None:
    dist, ref = random_pairs(2, size=40)
    for m in metrics:
        with torch.no_grad():
            full = m(dist, ref)
            fast = m.compare(m.features(dist), m.features(ref))  # type: ignore[operator]
            single = torch.cat([m(dist[i:i + 1], ref[i:i + 1]) for i in range(2)])
            swapped = m(ref, dist)
        assert m.has_features  # type: ignore[attr-defined]
        for other in (fast, single, swapped):
            torch.testing.assert_close(other, full, rtol=0, atol=1e-6, msg=lambda s, m=m: f"{m.name}: {s}")


def test_bf16_autocast_within_two_percent_of_float32(metrics: list[torch.nn.Module]) -> None:
    # bfloat16 keeps 8 mantissa bits (0.4% per rounding); the trunk runs in it, features are normalised
    # and compared in float32. Measured on the calibration pairs at 64 px: at most 0.6% (ST-LPIPS alex).
    dist, ref = calibration(64)
    for m in metrics:
        with torch.no_grad():
            full = m(dist, ref)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                half = m(dist, ref)
        assert half.dtype == torch.float32
        assert torch.all((half - full).abs() <= 0.02 * full.abs() + 1e-4), (m.name, full, half)


def test_module_follows_the_input_device() -> None:
    # 'meta' stands in for a second device on a CPU-only machine: shapes propagate, no data.
    m = STLPIPS("alex")
    feats = m.features(torch.rand(2, 3, 64, 64, device="meta"))
    assert all(f.device.type == "meta" for f in feats)
    assert next(m.parameters()).device.type == "meta"


def test_lpips_is_differentiable_for_use_as_a_loss() -> None:
    m = LPIPS("alex", pretrained=False)
    dist, ref = random_pairs(2)
    dist.requires_grad_(True)
    m(dist, ref).sum().backward()
    assert dist.grad is not None and float(dist.grad.abs().sum()) > 0
    assert all(p.grad is None for p in m.parameters())


def test_min_size_is_enforced_and_sufficient() -> None:
    m = STLPIPS("alex")
    ok = torch.rand(1, 3, m.min_size, m.min_size)
    assert m(ok, ok).shape == (1,)
    small = torch.rand(1, 3, m.min_size - 1, m.min_size - 1)
    with pytest.raises(ValueError, match="minimum"):
        m(small, small)


@pytest.mark.parametrize("name", list(TRUNKS))
def test_trunk_channels_and_frozen(name: str) -> None:
    trunk = build_trunk(name, pretrained=False)
    outs = trunk(torch.rand(1, 3, 64, 64))
    assert tuple(o.shape[1] for o in outs) == trunk.channels
    assert not any(p.requires_grad for p in trunk.parameters()) and not trunk.training


def test_st_trunk_loads_the_trained_weights() -> None:
    trunk = build_trunk("vgg-st")
    state = weights.load_state_dict("stlpips-vgg")
    assert torch.equal(trunk.features[28].weight, state["net.slice5.28.weight"])


def test_cards_create_the_metrics() -> None:
    from spips_bench import create_metric, get_spec

    m = create_metric("stlpips-vgg")
    assert isinstance(m, STLPIPS) and m.net == "vgg"
    for name in ("lpips", "lpips-vgg", "lpips-squeeze", "dists", "stlpips", "stlpips-vgg"):
        spec = get_spec(name)
        assert spec.weights and all(w in weights.WEIGHTS for w in spec.weights)
        assert not spec.higher_is_better
    assert get_spec("lpips-alex").name == "lpips"
    assert get_spec("stlpips").min_size == STLPIPS("alex").min_size
    assert STLPIPS("vgg").spec == get_spec("stlpips-vgg")  # the card is the instance's metadata
