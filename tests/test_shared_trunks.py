"""Shared trunks: metrics on the same network with the same weights run it once per image per batch.

The shift-tolerant metrics run with their real weights (shipped in the ``stlpips-pytorch`` wheel, so these
tests run offline); LPIPS and SPIPS on torchvision's networks run with random trunks (``pretrained=False``),
which share only when their weights are equal.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import spips_bench
from spips_bench.run.config import RunConfig
from spips_bench.run.runner import run_benchmark, score_batch, score_shared, trunk_groups
from spips_bench.run.store import read_table
from spips_bench.zoo.backbones import Trunk
from spips_bench.zoo.lpips import LPIPS
from spips_bench.zoo.spips.model import SPIPS

pytestmark = pytest.mark.filterwarnings("ignore::spips_bench.errors.UntrainedHeadsWarning")

#: The four metrics on ST-LPIPS's shift-tolerant AlexNet with its trained weights.
ALEX_ST = ["stlpips", "spips-alex-st", "spips-alex-st-abla1", "spips-alex-st-abla2"]
#: The two on its shift-tolerant VGG16.
VGG_ST = ["stlpips-vgg", "spips-vgg-st"]
#: Shared against alone. 2AFC runs the very same operations either way (one trunk pass per image); JND
#: alone runs one pass over both images of a pair (batch 2N), shared one per image (batch N), which
#: changes only the float32 summation order inside the convolutions: observed 0.0 here; the bound
#: leaves room for other CPUs' kernels, also on near-identical pairs (scores near 0).
RTOL, ATOL = 1e-5, 1e-7
#: Samples per category in the runs and their batch size: two batches per kind, one of them partial.
N, BATCH = 12, 8


def _named(label: str) -> Callable[[str], str]:
    """An ``assert_close`` message that starts with ``label``."""
    return lambda message: f"{label}: {message}"


def _images(n: int = 4, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 2AFC/JND batch: ``ref``, ``p0`` (``ref`` plus noise), ``p1`` (``ref`` blurred)."""
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(n, 3, size, size, generator=g)
    p0 = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    p1 = torch.nn.functional.avg_pool2d(ref, 3, stride=1, padding=1, count_include_pad=False)
    return {"ref": ref, "p0": p0, "p1": p1}


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    """The six shift-tolerant metrics, built once from their installed weights."""
    return {name: spips_bench.create_metric(name) for name in ALEX_ST + VGG_ST}


@pytest.fixture
def trunk_calls() -> Iterator[list[int]]:
    """The batch size of every :class:`Trunk` forward call while the test runs (a global forward hook)."""
    calls: list[int] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if isinstance(module, Trunk):
            calls.append(int(args[0].shape[0]))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def _random_pair(seed: int) -> tuple[LPIPS, SPIPS]:
    """LPIPS and SPIPS on AlexNet with one random trunk (the SPIPS trunk copied into LPIPS's)."""
    torch.manual_seed(seed)
    spips = SPIPS("alex", pretrained=False)
    lpips = LPIPS("alex", pretrained=False)
    assert spips.trunk is not None
    lpips.trunk.load_state_dict(spips.trunk.state_dict())
    return lpips, spips


# -- keys ---------------------------------------------------------------------------------------------------


def test_equal_networks_and_weights_share_a_key_and_others_do_not(real: dict[str, Any]) -> None:
    keys = {name: m.trunk_key() for name, m in real.items()}
    assert len({keys[n] for n in ALEX_ST}) == 1  # ST-LPIPS loads the file itself, SPIPS through build_trunk
    assert len({keys[n] for n in VGG_ST}) == 1
    assert keys["stlpips"] != keys["stlpips-vgg"]
    metrics = [real[n] for n in ALEX_ST + VGG_ST] + [spips_bench.create_metric("psnr")]
    assert trunk_groups(metrics) == [[0, 1, 2, 3], [4, 5], [6]]


def test_random_trunks_share_only_equal_weights() -> None:
    lpips, spips = _random_pair(0)
    assert lpips.trunk_key() == spips.trunk_key()  # same network, same random weights, same scaling
    torch.manual_seed(0)
    again = SPIPS("alex", pretrained=False)
    assert again.trunk_key() == spips.trunk_key()  # the same seed draws the same weights
    torch.manual_seed(1)
    other = SPIPS("alex", pretrained=False)
    assert other.trunk_key() != spips.trunk_key()
    assert trunk_groups([lpips, other, spips]) == [[0, 2], [1]]


def test_the_key_follows_changes_of_the_weights() -> None:
    lpips, spips = _random_pair(0)
    key = spips.trunk_key()
    with torch.no_grad():
        spips.trunk.features[0].weight[0, 0, 0, 0] += 1e-3  # type: ignore[index, union-attr]
    assert spips.trunk_key() != key  # an in-place change, as load_state_dict or training makes
    assert spips.trunk_key() != lpips.trunk_key()
    lpips.trunk.load_state_dict(spips.trunk.state_dict())  # type: ignore[union-attr]
    assert lpips.trunk_key() == spips.trunk_key()
    assert lpips.double().trunk_key() != spips.trunk_key()  # another dtype computes other features
    assert lpips.float().trunk_key() == spips.trunk_key()
    assert SPIPS("alex", streams=("traditional",), pretrained=False).trunk_key() is None  # no trunk


# -- scores -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["2afc", "jnd"])
@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bf16-autocast"])
def test_shared_scores_equal_each_metric_alone(real: dict[str, Any], kind: str, amp: bool) -> None:
    batch = _images()
    lpips, spips = _random_pair(0)
    for names, metrics in ((ALEX_ST, [real[n] for n in ALEX_ST]), (VGG_ST, [real[n] for n in VGG_ST]),
                           (["lpips (random)", "spips (random)"], [lpips, spips])):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            alone = [score_batch(kind, m, batch) for m in metrics]
            shared = score_shared(kind, metrics, batch)
        for name, a, s in zip(names, alone, shared, strict=True):
            assert len(a) == len(s) == (2 if kind == "2afc" else 1)
            for col_a, col_s in zip(a, s, strict=True):
                torch.testing.assert_close(col_s, col_a, rtol=RTOL, atol=ATOL, msg=_named(name))


def test_the_trunk_runs_once_per_image_and_its_outputs_are_released(real: dict[str, Any],
                                                                     trunk_calls: list[int]) -> None:
    batch = _images(n=3)
    outputs: list[weakref.ref[torch.Tensor]] = []
    metrics = [real[n] for n in ALEX_ST]
    handles = [m.trunk.register_forward_hook(lambda mod, args, out: outputs.extend(map(weakref.ref, out)))
               for m in metrics]
    try:
        with torch.inference_mode():
            score_shared("2afc", metrics, batch)
            assert trunk_calls == [3, 3, 3]  # ref, p0, p1: once each for the four metrics
            score_shared("jnd", metrics, batch)
            assert trunk_calls == [3, 3, 3, 3, 3]  # p0, p1
    finally:
        for h in handles:
            h.remove()
    gc.collect()
    assert outputs and all(r() is None for r in outputs)  # nothing of the batch's activations is kept


def test_a_triplet_is_one_trunk_pass_where_the_trunk_runs_faster_so(real: dict[str, Any],
                                                                     trunk_calls: list[int]) -> None:
    # AlexNet (stride-4 first layer): ref, p0 and p1 in one pass of 3 x 4 images on CPU; the shift-tolerant
    # AlexNet (full-size first maps): one pass per image part. The scores are those of the metric alone.
    batch = _images(n=4)
    alex = LPIPS("alex", pretrained=False)
    with torch.inference_mode():
        fast = score_batch("2afc", alex, batch)
        assert trunk_calls == [12]
        score_batch("2afc", real["stlpips"], batch)
        assert trunk_calls == [12, 4, 4, 4]
        for col, dist in zip(fast, ("p0", "p1"), strict=True):
            torch.testing.assert_close(col, alex(batch[dist], batch["ref"]).to(col.dtype), rtol=RTOL, atol=ATOL,
                                       msg=_named(f"lpips {dist}"))


def test_every_metric_of_a_group_checks_its_own_minimum_size(real: dict[str, Any]) -> None:
    small = {k: v[:, :, :32, :32] for k, v in _images().items()}  # ST-LPIPS accepts 32 px, SPIPS needs 41
    with torch.inference_mode(), pytest.raises(ValueError, match="minimum of 41x41"):
        score_shared("2afc", [real["stlpips"], real["spips-alex-st"]], small)


# -- runs ---------------------------------------------------------------------------------------------------


def _run(root: Path, out: Path, metrics: list[str]) -> dict[str, Any]:
    config = RunConfig(metrics=metrics, dataset="bapps", root=root, categories=["cnn"], out=out, workers=0,
                       bootstrap=0, progress=False, batch_size=BATCH)
    return run_benchmark(config).record


def _stored(out: Path, name: str) -> dict[str, dict[str, tuple[float, ...]]]:
    return {"2afc": read_table(out / "scores" / "2afc" / "cnn" / f"{name}.csv", ("d0", "d1")),
            "jnd": read_table(out / "scores" / "jnd" / "cnn" / f"{name}.csv", ("d",))}


def _assert_same_store(out: Path, expected: Path, names: list[str]) -> None:
    for name in names:
        got, want = _stored(out, name), _stored(expected, name)
        for kind in ("2afc", "jnd"):
            assert sorted(got[kind]) == sorted(want[kind]) and len(got[kind]) == N, (name, kind)
            torch.testing.assert_close(torch.tensor([got[kind][s] for s in sorted(got[kind])], dtype=torch.float64),
                                       torch.tensor([want[kind][s] for s in sorted(want[kind])], dtype=torch.float64),
                                       rtol=RTOL, atol=ATOL, msg=_named(f"{name} {kind}"))


@pytest.fixture
def bapps(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path) -> Path:
    return demo_cnn_copy(tmp_path / "bapps", N)


def test_a_run_of_the_four_stores_what_each_run_alone_stores(bapps: Path, tmp_path: Path,
                                                           trunk_calls: list[int]) -> None:
    record = _run(bapps, tmp_path / "together", ALEX_ST)
    # two batches per kind (8 + 4 samples): 2AFC ref, p0, p1 and JND p0, p1, for all four metrics at once
    assert trunk_calls == [8, 8, 8, 4, 4, 4, 8, 8, 4, 4]
    assert all(record["metric_seconds"][n] > 0 for n in ALEX_ST)
    together_calls = len(trunk_calls)
    for name in ALEX_ST:
        _run(bapps, tmp_path / name, [name])
    # alone: three passes per 2AFC batch (the features fast path) and one per JND batch (both images)
    assert len(trunk_calls) - together_calls == len(ALEX_ST) * (2 * 3 + 2 * 1)
    for name in ALEX_ST:
        _assert_same_store(tmp_path / "together", tmp_path / name, [name])


def test_metrics_added_to_a_folder_share_the_trunk_and_the_stored_ones_stay(bapps: Path, tmp_path: Path,
                                                                            trunk_calls: list[int]) -> None:
    out = tmp_path / "run"
    _run(bapps, out, ALEX_ST[:2])
    before = {n: (out / "scores" / "2afc" / "cnn" / f"{n}.csv").read_bytes() for n in ALEX_ST[:2]}
    del trunk_calls[:]
    record = _run(bapps, out, ALEX_ST)
    assert len(trunk_calls) == 2 * 3 + 2 * 2  # the two added metrics, as one group
    assert record["throughput"]["pair_scores"] == 2 * (N * 2 + N)  # the stored two are not scored again
    assert {n: (out / "scores" / "2afc" / "cnn" / f"{n}.csv").read_bytes() for n in ALEX_ST[:2]} == before
    _run(bapps, tmp_path / "together", ALEX_ST)
    _assert_same_store(out, tmp_path / "together", ALEX_ST)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_shared_scores_on_cuda_equal_each_metric_alone(real: dict[str, Any]) -> None:
    batch = {k: v.cuda() for k, v in _images().items()}
    metrics = [spips_bench.create_metric(n).cuda() for n in ALEX_ST]
    for amp in (False, True):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            alone = [score_batch("2afc", m, batch) for m in metrics]
            shared = score_shared("2afc", metrics, batch)
        for a, s in zip(alone, shared, strict=True):
            for col_a, col_s in zip(a, s, strict=True):
                torch.testing.assert_close(col_s, col_a, rtol=1e-5, atol=1e-6)
