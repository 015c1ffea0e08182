"""The metric contract, checked on every metric that ``list_metrics()`` names: built-ins and plugins alike.

Each check is a function of a :class:`Subject` (a spec and a way to build fresh instances), so that
``tests/test_plugin.py`` applies the same checks to a metric that an installed plugin package registers.
Only the public API is used: ``spips_bench.create_metric``, ``list_metrics``, ``get_spec`` and the
registry's :class:`~spips_bench.registry.MetricSpec`.

Metrics whose weight files or packages are absent on this machine are skipped with the spec's own
reason (``MetricSpec.unavailable_reason``); nothing is downloaded.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

import spips_bench
from spips_bench.registry import MetricSpec

#: Side of the test images: the BAPPS patch size, above every built-in metric's ``min_size``.
SIZE = 64
#: Pairs per batch.
BATCH = 3

# Tolerances, each with its reason.
#: The same pair scored alone or inside a batch, or with the arguments swapped (symmetric metrics): only
#: float32 summation order may differ (observed at most 7.5e-9, SPIPS).
SAME_TOL = {"atol": 1e-6, "rtol": 1e-5}
#: d(x, x) of a distance: exactly 0 for every built-in distance (observed 0.0).
IDENTITY_ATOL = 1e-6
#: A float64 module on float64 images against float32: float32 rounding only (observed at most 2.3e-6
#: relative, ST-LPIPS; the classical metrics compute in float64 already).
FLOAT64_TOL = {"atol": 1e-5, "rtol": 1e-4}
#: CUDA against CPU with TF32 off: float32 rounding of other kernels (not measured: no GPU on the build machines).
CUDA_TOL = {"atol": 1e-5, "rtol": 1e-4}
#: bfloat16 autocast on CPU against float32, relative to the score, per family (name prefixes, first
#: match). bfloat16 keeps 8 mantissa bits; observed on the pairs below: PSNR, VIF and VIFp 0 (float64
#: cores, untouched by autocast), SSIM 3.1e-3, MS-SSIM 1.2e-3, ST-LPIPS 3.5e-3 (alex) and 6.1e-3 (vgg),
#: SPIPS up to 3.4e-3. The bounds leave 3x or more for other CPUs' bfloat16 kernels; LPIPS and DISTS
#: (absent here without ImageNet trunks) share the deep bound, measured within 2% in tests/test_deep.py.
BF16_RTOL: tuple[tuple[str, float], ...] = (
    ("psnr", 1e-4),
    ("vif", 1e-4),
    ("ms-ssim", 1e-2),
    ("ssim", 1e-2),
    ("spips", 2e-2),
    ("stlpips", 2e-2),
    ("lpips", 2e-2),
    ("dists", 2e-2),
)
#: A metric of no family above (a plugin): the deep metrics' bound.
BF16_DEFAULT_RTOL = 2e-2
#: Absolute slack for scores near zero.
BF16_ATOL = 1e-4


@dataclass
class Subject:
    """A metric under test: its spec and a factory of fresh instances (one is built and kept)."""

    spec: MetricSpec
    build: Callable[[], torch.nn.Module]
    metric: torch.nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.metric = self.build()

    @property
    def size(self) -> int:
        return max(SIZE, self.spec.min_size)


def pairs(n: int = BATCH, size: int = SIZE, seed: int = 0, dtype: torch.dtype = torch.float32
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dist, ref)``: ``n`` different smooth images with texture, and each with visible noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, max(size // 8, 2), max(size // 8, 2), generator=g, dtype=torch.float64)
    ref = torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)
    ref = (0.7 * ref + 0.3 * torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)).clamp(0.05, 0.95)
    dist = (ref + 0.08 * torch.randn(ref.shape, generator=g, dtype=torch.float64)).clamp(0.0, 1.0)
    return dist.to(dtype), ref.to(dtype)


def _blur(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def _score(metric: torch.nn.Module, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = metric(dist, ref)
    return out


def bf16_rtol(name: str) -> float:
    """The bfloat16 bound of ``name``'s family (:data:`BF16_RTOL`)."""
    return next((tol for prefix, tol in BF16_RTOL if name.startswith(prefix)), BF16_DEFAULT_RTOL)


# -- the checks --------------------------------------------------------------------------------------------


def check_output(s: Subject) -> None:
    """``(N,)`` floating-point scores, finite on distinct images, for N = 1 and N = 3 and at the declared
    ``min_size``; inputs untouched."""
    dist, ref = pairs(size=s.size)
    keep_dist, keep_ref = dist.clone(), ref.clone()
    for n in (1, BATCH):
        out = _score(s.metric, dist[:n], ref[:n])
        assert isinstance(out, torch.Tensor), f"{s.spec.name}: returned {type(out).__name__}, not a tensor"
        assert out.shape == (n,), f"{s.spec.name}: shape {tuple(out.shape)} for a batch of {n}, expected ({n},)"
        assert out.is_floating_point(), f"{s.spec.name}: dtype {out.dtype}"
        assert bool(torch.isfinite(out).all()), f"{s.spec.name}: non-finite scores {out.tolist()}"
    assert torch.equal(dist, keep_dist) and torch.equal(ref, keep_ref), f"{s.spec.name} changed its inputs"
    m = s.spec.min_size  # the declared minimum is enough
    out = _score(s.metric, dist[:1, :, :m, :m], ref[:1, :, :m, :m])
    assert out.shape == (1,) and bool(torch.isfinite(out).all()), f"{s.spec.name} at {m}x{m}: {out.tolist()}"


def check_batch_independence(s: Subject) -> None:
    """Each pair scores the same alone as inside a batch, and a reordered batch reorders the scores."""
    dist, ref = pairs(size=s.size, seed=1)
    batched = _score(s.metric, dist, ref)
    alone = torch.cat([_score(s.metric, dist[i:i + 1], ref[i:i + 1]) for i in range(BATCH)])
    torch.testing.assert_close(alone, batched, **SAME_TOL, msg=lambda m: f"{s.spec.name} alone vs batched: {m}")
    order = torch.tensor([2, 0, 1])
    reordered = _score(s.metric, dist[order], ref[order])
    torch.testing.assert_close(reordered, batched[order], **SAME_TOL,
                               msg=lambda m: f"{s.spec.name} reordered batch: {m}")


def check_identity(s: Subject) -> None:
    """d(x, x) is the best score: 0 for a distance, and better than noise or blur for every metric
    (+inf allowed for a similarity: PSNR)."""
    dist, ref = pairs(size=s.size, seed=2)
    same = _score(s.metric, ref, ref)
    name = s.spec.name
    assert not bool(torch.isnan(same).any()), f"{name}: d(x, x) = {same.tolist()}"
    if s.spec.higher_is_better:
        assert not bool((same == float("-inf")).any()), f"{name}: d(x, x) = {same.tolist()}"
    else:
        assert bool((same.abs() <= IDENTITY_ATOL).all()), f"{name}: distance d(x, x) = {same.tolist()}, not 0"
    for label, worse in (("noise", dist), ("blur", _blur(ref))):
        other = _score(s.metric, worse, ref)
        better = same > other if s.spec.higher_is_better else same < other
        assert bool(better.all()), f"{name}: d(x, x) = {same.tolist()} not better than {label}: {other.tolist()}"


def check_symmetry(s: Subject) -> None:
    """d(a, b) == d(b, a) where the spec declares ``symmetric``."""
    if not s.spec.symmetric:
        pytest.skip(f"{s.spec.name}: declared asymmetric (symmetric = false)")
    dist, ref = pairs(size=s.size, seed=3)
    torch.testing.assert_close(_score(s.metric, ref, dist), _score(s.metric, dist, ref), **SAME_TOL,
                               msg=lambda m: f"{s.spec.name} swapped: {m}")


def _bad_inputs(s: Subject) -> list[tuple[str, object, object, type[Exception], str]]:
    """(case, dist, ref, error class, pattern naming the argument and the value)."""
    dist, ref = pairs(size=s.size, seed=4)
    k = s.size
    shape3 = (3, k, k)
    nan = ref.clone()
    nan[0, 1, 2, 3] = float("nan")
    cases: list[tuple[str, object, object, type[Exception], str]] = [
        ("not-a-tensor", dist.numpy(), ref, TypeError, "dist.*ndarray"),
        ("ndim", dist[0], ref[0], ValueError, "dist must have 4 dimensions.*got shape " + re.escape(str(shape3))),
        ("channels", dist[:, :1], ref[:, :1], ValueError, r"dist must have 3 \(RGB\) channels.*got 1"),
        ("range", dist * 255, ref, ValueError, r"dist has values in \[.*, 2\d\d.*\], outside \[0, 1\]"),
        ("nan", dist, nan, ValueError, "ref contains 1 NaN"),
        ("integer", (dist * 255).to(torch.uint8), (ref * 255).to(torch.uint8), TypeError, "torch.uint8"),
        ("shapes", dist, ref[:, :, :, :-1], ValueError, re.escape(f"{(BATCH, 3, k, k)} and {(BATCH, 3, k, k - 1)}")),
        ("devices", dist.to("meta"), ref, ValueError, "dist is on meta and ref on cpu"),
        ("dtypes", dist.double(), ref, TypeError, "torch.float64 and ref torch.float32"),
    ]
    if s.spec.min_size > 1:
        m = s.spec.min_size - 1
        cases.append(("min-size", dist[:, :, :m, :m], ref[:, :, :m, :m], ValueError,
                      f"{m}x{m} pixels, smaller than .* minimum of {m + 1}x{m + 1}"))
    return cases


def check_validation(s: Subject) -> None:
    """Wrong kind, ndim, channels, range, NaN, dtype, shapes, devices or size: TypeError/ValueError that
    names the argument and the value."""
    for case, dist, ref, error, pattern in _bad_inputs(s):
        with pytest.raises(error, match=pattern):
            s.metric(dist, ref)
            pytest.fail(f"{s.spec.name}: {case} input accepted")


def check_device_moves(s: Subject) -> None:
    """``.to("cpu")`` keeps the scores; ``.to(torch.float64)`` scores float64 images like float32."""
    dist, ref = pairs(n=2, size=s.size, seed=5)  # two pairs: float64 convolutions are slow on a CPU
    expected = _score(s.metric, dist, ref)
    moved = s.metric.to("cpu")
    assert moved is s.metric
    torch.testing.assert_close(_score(moved, dist, ref), expected, **SAME_TOL)
    wide = s.build().to(torch.float64)
    out = _score(wide, dist.double(), ref.double())
    assert out.shape == (2,) and out.is_floating_point() and bool(torch.isfinite(out).all()), out
    torch.testing.assert_close(out.double(), expected.double(), **FLOAT64_TOL,
                               msg=lambda m: f"{s.spec.name} float64 vs float32: {m}")


def check_cuda_move(s: Subject) -> None:
    """``.to("cuda")`` scores CUDA images like the CPU (TF32 off: float32 on both sides)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    dist, ref = pairs(size=s.size, seed=6)
    expected = _score(s.metric, dist, ref)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.backends.cudnn, "allow_tf32", False)
        mp.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        out = _score(s.build().to("cuda"), dist.cuda(), ref.cuda())
    assert out.device.type == "cuda" and out.shape == (BATCH,)
    torch.testing.assert_close(out.cpu(), expected, **CUDA_TOL, msg=lambda m: f"{s.spec.name} cuda vs cpu: {m}")


def check_gradient(s: Subject) -> None:
    """Finite gradient w.r.t. ``dist``, nonzero for every image, where the spec declares ``differentiable``."""
    if not s.spec.differentiable:
        pytest.skip(f"{s.spec.name}: not differentiable with its card's options (differentiable = false)")
    dist, ref = pairs(size=s.size, seed=7)
    dist.requires_grad_(True)
    s.metric(dist, ref).sum().backward()
    assert dist.grad is not None, f"{s.spec.name}: no gradient reached dist"
    assert bool(torch.isfinite(dist.grad).all()), f"{s.spec.name}: non-finite gradient"
    per_image = dist.grad.abs().flatten(1).sum(1)
    assert bool((per_image > 0).all()), f"{s.spec.name}: zero gradient for some images: {per_image.tolist()}"


def check_bf16_autocast(s: Subject) -> None:
    """bfloat16 autocast on the CPU: finite scores within the family's bound of float32."""
    dist, ref = pairs(size=s.size, seed=8)
    full = _score(s.metric, dist, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _score(s.metric, dist, ref)
    assert low.shape == (BATCH,) and low.is_floating_point(), (low.shape, low.dtype)
    assert bool(torch.isfinite(low).all()), f"{s.spec.name}: bfloat16 scores {low.tolist()}"
    rtol = bf16_rtol(s.spec.name)
    dev = (low.float() - full.float()).abs()
    bound = rtol * full.float().abs() + BF16_ATOL
    assert bool((dev <= bound).all()), (
        f"{s.spec.name}: bfloat16 {low.tolist()} vs float32 {full.tolist()} (bound {rtol} relative)")


def check_fast_path(s: Subject) -> None:
    """Where a metric has the triplet fast path, ``compare(features(d), features(ref))`` equals
    ``metric(d, ref)``, with the reference's features reused for two distortions."""
    metric = s.metric
    if not getattr(metric, "has_features", False):
        pytest.skip(f"{s.spec.name}: no features()/compare() fast path")
    d0, ref = pairs(size=s.size, seed=9)
    d1 = _blur(ref)
    with torch.no_grad():
        f_ref = metric.features(ref)  # type: ignore[operator]
        for label, dist in (("noise", d0), ("blur", d1)):
            fast = metric.compare(metric.features(dist), f_ref)  # type: ignore[operator]
            torch.testing.assert_close(fast, metric(dist, ref), **SAME_TOL,
                                       msg=lambda m, label=label: f"{s.spec.name} fast path, {label}: {m}")
        # features_of (the runner's call: every distinct image of a triplet at once) scores the same
        features_of = getattr(metric, "features_of", None)  # a Metric's; a duck-typed plugin may lack it
        if not callable(features_of):
            return
        both = features_of([ref, d0, d1])
        assert len(both) == 3, f"{s.spec.name}: features_of returned {len(both)} results for 3 batches"
        for label, dist, f in (("noise", d0, both[1]), ("blur", d1, both[2])):
            torch.testing.assert_close(metric.compare(f, both[0]), metric(dist, ref), **SAME_TOL,  # type: ignore[operator]
                                       msg=lambda m, label=label: f"{s.spec.name} features_of, {label}: {m}")


def _perturbed(metric: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``metric`` with every floating parameter and buffer moved by a small fixed-seed amount."""
    other = copy.deepcopy(metric)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for t in [*other.parameters(), *other.buffers()]:
            if t.is_floating_point():
                t.add_(1e-2 * torch.randn(t.shape, generator=g, dtype=t.dtype))
    return other


def check_trunk_sharing(s: Subject) -> None:
    """Where a metric declares a ``trunk_key``: the key is hashable and stable, ``compare`` of
    ``features_from_trunk(trunk_features(x), x)`` equals ``metric(dist, ref)``, equal keys give the same
    scores from each other's trunk outputs (a fresh instance, a copy with perturbed weights), and a
    float64 copy has another key."""
    metric = s.metric
    key_of = getattr(metric, "trunk_key", None)
    key = key_of() if callable(key_of) else None
    if key is None:
        pytest.skip(f"{s.spec.name}: declares no shared trunk (trunk_key() is None)")
    name = s.spec.name
    hash(key)
    assert getattr(metric, "has_features", False), f"{name}: a trunk_key needs the features()/compare() fast path"
    dist, ref = pairs(size=s.size, seed=10)

    def shared_scores(owner: torch.nn.Module) -> torch.Tensor:
        fd, fr = (metric.features_from_trunk(owner.trunk_features(x), x) for x in (dist, ref))  # type: ignore[operator]
        out: torch.Tensor = metric.compare(fd, fr)  # type: ignore[operator]
        return out

    with torch.no_grad():
        fast = shared_scores(metric)
        torch.testing.assert_close(fast, metric(dist, ref), **SAME_TOL,
                                   msg=lambda m: f"{name} scores from trunk_features: {m}")
        assert metric.trunk_key() == key, f"{name}: trunk_key() changed between calls"  # type: ignore[operator]
        for label, other in (("a fresh instance", s.build()), ("a copy with perturbed weights", _perturbed(metric))):
            if other.trunk_key() == key:  # type: ignore[operator]
                torch.testing.assert_close(shared_scores(other), fast, **SAME_TOL,
                                           msg=lambda m, label=label: f"{name}, equal key of {label}: {m}")
    wide = s.build().to(torch.float64)
    assert wide.trunk_key() != key, f"{name}: a float64 copy has the float32 trunk_key"  # type: ignore[operator]


#: Every check, by name; tests/test_plugin.py runs them on a plugin's metric.
CHECKS: dict[str, Callable[[Subject], None]] = {
    "output": check_output,
    "batch-independence": check_batch_independence,
    "identity": check_identity,
    "symmetry": check_symmetry,
    "validation": check_validation,
    "device-moves": check_device_moves,
    "cuda-move": check_cuda_move,
    "gradient": check_gradient,
    "bf16-autocast": check_bf16_autocast,
    "fast-path": check_fast_path,
    "trunk-sharing": check_trunk_sharing,
}


# -- every registered metric ----------------------------------------------------------------------------


@functools.cache
def _subject(name: str) -> Subject:
    return Subject(spips_bench.get_spec(name), lambda: spips_bench.create_metric(name))


def registered_subject(name: str) -> Subject:
    """The subject of registered metric ``name``, or a skip naming why it cannot run here."""
    reason = spips_bench.get_spec(name).unavailable_reason()
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    return _subject(name)


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", spips_bench.list_metrics())
def test_contract(name: str, check: str) -> None:
    CHECKS[check](registered_subject(name))


# -- the checks can fail ---------------------------------------------------------------------------------


class _Defective(torch.nn.Module):
    """The registered PSNR with one clause of the contract broken (``defect``), or none."""

    gain: torch.Tensor

    def __init__(self, defect: str | None) -> None:
        super().__init__()
        self.inner = spips_bench.create_metric("psnr")
        self.defect = defect
        self.register_buffer("gain", torch.tensor(0.5))

    def forward(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if self.defect == "accepts-anything":
            try:
                return self.inner(dist, ref)  # type: ignore[no-any-return]
            except (TypeError, ValueError):
                return torch.zeros(len(dist))
        if self.defect == "rounds-dist":
            dist = torch.round(dist * 255) / 255  # 8-bit values: a zero gradient
        out: torch.Tensor = self.inner(dist, ref)
        if self.defect == "reduces":
            return out.mean()
        if self.defect == "batch-mean":
            return out + dist.mean()
        if self.defect == "flipped":
            return -out
        if self.defect == "asymmetric":
            return out + dist.mean(dim=(1, 2, 3))
        if self.defect == "float64-drift" and dist.dtype == torch.float64:
            return out * 1.001
        if self.defect == "autocast-drift" and torch.is_autocast_enabled("cpu"):
            return out * 1.01
        return out

    @property
    def has_features(self) -> bool:
        return True

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def compare(self, f_dist: torch.Tensor, f_ref: torch.Tensor) -> torch.Tensor:
        out = self(f_dist, f_ref)
        return out * 1.001 if self.defect == "fast-path-drift" else out

    def trunk_key(self) -> tuple[object, ...]:
        # its "trunk" multiplies by the buffer ``gain``, whose value and dtype the key must name
        if self.defect == "trunk-key-blind":
            return ("stand-in",)
        return ("stand-in", float(self.gain), str(self.gain.dtype))

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain

    def features_from_trunk(self, shared: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = (shared / 0.5).clamp(0.0, 1.0)  # exact: gain is 0.5
        return (out * 1.001).clamp(0.0, 1.0) if self.defect == "trunk-drift" else out


#: Each defect and the check that must reject it.
DEFECTS = {
    "reduces": "output",
    "batch-mean": "batch-independence",
    "flipped": "identity",
    "asymmetric": "symmetry",
    "accepts-anything": "validation",
    "float64-drift": "device-moves",
    "rounds-dist": "gradient",
    "autocast-drift": "bf16-autocast",
    "fast-path-drift": "fast-path",
    "trunk-drift": "trunk-sharing",
    "trunk-key-blind": "trunk-sharing",
}


def _defective(defect: str | None) -> Subject:
    from dataclasses import replace

    spec = replace(spips_bench.get_spec("psnr"), name=f"psnr-{defect or 'intact'}")
    return Subject(spec, lambda: _Defective(defect))


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_check_rejects_a_metric_that_breaks_it(defect: str) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        CHECKS[DEFECTS[defect]](_defective(defect))


@pytest.mark.parametrize("check", [c for c in CHECKS if c != "cuda-move"])
def test_the_intact_stand_in_passes_every_check(check: str) -> None:
    CHECKS[check](_defective(None))


# -- parity with a reference package ------------------------------------------------------------------------

# piq computes in the input dtype, so float64 images compare the formulas. The card options that differ
# from piq's conventions are set to piq's: per-channel SSIM/MS-SSIM (color="rgb") instead of MATLAB's
# 8-bit gray. PSNR: piq adds 1e-8 to the MSE (7.5e-6 dB at these noise levels). MS-SSIM needs 161 px for
# piq's five scales. LPIPS, DISTS and ST-LPIPS are compared with their reference packages (the same
# random ImageNet trunk where the trained one cannot be downloaded) in tests/test_deep.py.
PARITY: dict[str, tuple[dict[str, object], str, dict[str, object], int, float]] = {
    # name: (options, piq function, piq keywords, image side, absolute tolerance)
    "psnr": ({}, "psnr", {}, SIZE, 1e-4),
    "ssim": ({"color": "rgb"}, "ssim", {"downsample": False}, SIZE, 1e-6),
    "ms-ssim": ({"color": "rgb"}, "multi_scale_ssim", {}, 176, 1e-6),
    "vifp": ({}, "vif_p", {}, SIZE, 1e-6),
}


@pytest.mark.parametrize("name", list(PARITY))
def test_parity_with_piq(name: str) -> None:
    piq = pytest.importorskip("piq")
    options, function, kwargs, size, tol = PARITY[name]
    metric = spips_bench.create_metric(name, **options)
    dist, ref = pairs(n=2 if size == SIZE else 1, size=size, seed=9, dtype=torch.float64)
    ours = _score(metric, dist, ref)
    theirs = getattr(piq, function)(dist, ref, data_range=1.0, reduction="none", **kwargs)
    dev = (ours - theirs).abs().max().item()
    assert dev <= tol, f"{name}: {ours.tolist()} vs piq.{function} {theirs.tolist()} (max dev {dev:.2e})"
