"""The per-pixel heads of SPIPS (eqs. 9-11: linear or MLP) and the warning about untrained heads."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import spips_bench
from spips_bench.errors import UntrainedHeadsWarning, WeightsIntegrityError
from spips_bench.zoo.spips import model as spips_model
from spips_bench.zoo.spips.checkpoint import save_checkpoint
from spips_bench.zoo.spips.deep import head_convs, init_head, pixel_head
from spips_bench.zoo.spips.model import CONFIG_KEYS, SPIPS

VARIANTS = [{}, {"streams": ("traditional", "perceptual")}, {"streams": ("perceptual", "semantic")},
            {"feature_norm": "plain"}, {"fusion": "mlp"}]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    # Most tests here build untrained metrics on purpose; the warning tests switch it back on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadsWarning)
        yield


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No variant has warned yet in this process, and the warning is shown (not ignored)."""
    monkeypatch.setattr(spips_model, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("default", UntrainedHeadsWarning)
        yield


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    from skimage import data

    imgs = [np.asarray(getattr(data, n)(), dtype=np.float32)[:64, :64, :3] / 255.0
            for n in ("astronaut", "coffee", "chelsea")]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def _distorted(photos: torch.Tensor, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (photos + 0.05 * torch.randn(photos.shape, generator=gen)).clamp(0, 1)


def _heads(m: SPIPS) -> dict[str, torch.Tensor]:
    return {n: p for n, p in m.named_parameters() if not n.startswith("trunk.") and n != "logits"}


# -- the MLP head -----------------------------------------------------------------------------------

@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "full")
def test_untrained_mlp_head_scores_like_the_linear_head(options: dict, photos: torch.Tensor) -> None:
    linear = SPIPS("alex-st", **options)
    mlp = SPIPS("alex-st", head="mlp", **options)
    assert linear.head == "linear" and mlp.head == "mlp" and mlp.trained is False
    dist = _distorted(photos)
    with torch.no_grad():
        torch.testing.assert_close(mlp(dist, photos), linear(dist, photos), atol=1e-6, rtol=1e-5)
        for stream, lmap in linear.stream_maps(dist, photos).items():
            torch.testing.assert_close(mlp.stream_maps(dist, photos)[stream], lmap, atol=1e-6, rtol=1e-5)
        assert float(mlp(photos, photos).abs().max()) == 0.0


def test_mlp_head_shapes_and_names() -> None:
    m = SPIPS("alex", pretrained=False, head="mlp", head_channels=5)
    shapes = {n: tuple(p.shape) for n, p in _heads(m).items()}
    assert shapes["trad_head.weight"] == (5, 9, 1, 1) and shapes["trad_head_out.weight"] == (1, 5, 1, 1)
    assert shapes["perceptual.convs.2.weight"] == (5, 384, 1, 1)
    assert shapes["semantic.outs.1.weight"] == (1, 5, 1, 1)
    convs = [mod for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d) and not n.startswith("trunk")]
    assert len(convs) == 2 * 6 and all(mod.bias is None for mod in convs)  # no bias: a zero map gives 0
    linear = SPIPS("alex", pretrained=False)
    assert {n for n in _heads(linear)} == {"trad_head.weight", *(f"perceptual.convs.{i}.weight" for i in range(3)),
                                           "semantic.convs.0.weight", "semantic.convs.1.weight"}
    assert m.config()["head"] == "mlp" and m.config()["head_channels"] == 5
    assert linear.config()["head"] == "linear" and linear.config()["head_channels"] is None
    assert {"head", "head_channels"} <= set(CONFIG_KEYS)


def test_the_mlp_relu_acts_where_the_linear_relu_cannot() -> None:
    # On maps >= 0 the linear head with weights >= 0 is additive in the maps; the MLP head is not.
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 6, 5, 5, generator=gen), torch.rand(2, 6, 5, 5, generator=gen)
    first, _ = head_convs(6, "linear", 8)
    init_head(first, None, 0.2, gen)
    torch.testing.assert_close(pixel_head(a + b, first, None), pixel_head(a, first, None) + pixel_head(b, first, None))
    first, out = head_convs(6, "mlp", 8)
    with torch.no_grad():
        first.weight.copy_(torch.randn(first.weight.shape, generator=gen))
        out.weight.copy_(torch.rand(out.weight.shape, generator=gen))  # type: ignore[union-attr]
    with torch.no_grad():
        ga, gb, gab = pixel_head(a, first, out), pixel_head(b, first, out), pixel_head(a + b, first, out)
    assert float((gab - ga - gb).abs().max()) > 1e-3  # the ReLU clips some hidden units
    assert bool((ga >= 0).all()) and float(pixel_head(torch.zeros_like(a), first, out).abs().max()) == 0.0


def test_scores_stay_nonnegative_and_zero_for_identical_images_with_any_mlp_weights(photos: torch.Tensor) -> None:
    m = SPIPS("alex-st", head="mlp", head_channels=4)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in _heads(m).values():
            p.copy_(torch.randn(p.shape, generator=gen))  # either sign everywhere, as after a training step
    m.clamp_nonnegative()
    dist = _distorted(photos, 1)
    with torch.no_grad():
        s = m(dist, photos)
        values = m.stream_values(m.features(dist), m.features(photos))
        assert bool((s >= 0).all()) and bool((values >= 0).all()) and float(values.max()) > 0
        assert float(m(photos, photos).abs().max()) == 0.0


def test_clamp_keeps_the_sign_constraint_of_each_head() -> None:
    for head in ("linear", "mlp"):
        m = SPIPS("alex", pretrained=False, head=head)
        with torch.no_grad():
            for p in _heads(m).values():
                p.fill_(-1.0)
        m.clamp_nonnegative()
        for name, p in _heads(m).items():
            output_layer = head == "linear" or "outs." in name or name.startswith("trad_head_out")
            # the layer meeting the output is >= 0; the MLP's first layer keeps its sign (the ReLU acts)
            assert float(p.min()) == (0.0 if output_layer else -1.0), (head, name)


@pytest.mark.parametrize("kwargs, match", [({"head": "conv"}, "head='conv'"), ({"head_channels": 0}, "head_channels"),
                                           ({"head_channels": 2.5}, "head_channels"),
                                           ({"head_channels": True}, "head_channels")])
def test_bad_head_options_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SPIPS("alex", pretrained=False, head="mlp" if "head" not in kwargs else kwargs.pop("head"), **kwargs)


# -- checkpoints ------------------------------------------------------------------------------------

def test_checkpoint_written_without_head_keys_loads_as_the_linear_head(tmp_path: Path, photos: torch.Tensor) -> None:
    m = SPIPS("alex-st")
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in _heads(m).values():
            p.copy_(torch.rand(p.shape, generator=gen))
    old_config = {k: v for k, v in m.config().items() if k not in ("head", "head_channels")}
    path = save_checkpoint(tmp_path / "old.safetensors", m.trainable_state_dict(), old_config)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert "head" not in json.loads(fh.metadata()["config"])
    loaded = spips_bench.create_metric("spips-alex-st", checkpoint=path)
    assert loaded.trained is True and loaded.head == "linear"
    dist = _distorted(photos)
    with torch.no_grad():
        torch.testing.assert_close(loaded(dist, photos), m(dist, photos), atol=0, rtol=0)
    with pytest.raises(WeightsIntegrityError, match="head: checkpoint 'linear', metric 'mlp'"):
        SPIPS("alex-st", head="mlp", checkpoint=path)


def test_mlp_checkpoint_round_trip_and_mismatches(tmp_path: Path, photos: torch.Tensor) -> None:
    m = SPIPS("alex-st", head="mlp", head_channels=4)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in _heads(m).values():
            p.copy_(torch.randn(p.shape, generator=gen))
    m.clamp_nonnegative()
    path = m.save_checkpoint(tmp_path / "mlp.safetensors")
    loaded = spips_bench.create_metric("spips-alex-st", head="mlp", head_channels=4, checkpoint=path)
    dist = _distorted(photos)
    with torch.no_grad():
        torch.testing.assert_close(loaded(dist, photos), m(dist, photos), atol=0, rtol=0)
    with pytest.raises(WeightsIntegrityError, match="head: checkpoint 'mlp', metric 'linear'"):
        SPIPS("alex-st", checkpoint=path)
    with pytest.raises(WeightsIntegrityError, match="head_channels: checkpoint 4, metric 8"):
        SPIPS("alex-st", head="mlp", checkpoint=path)


# -- training ---------------------------------------------------------------------------------------

def _make_2afc(root: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """A small BAPPS-layout 2AFC set: noise against a brightness shift, which the raters prefer."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(data, n)(), dtype=np.float32)[..., :3] / 255.0 for n in ("astronaut", "coffee")]
    for split, n in (("train", n_train), ("val", n_val)):
        base = root / "2afc" / split / "traditional"
        for part in ("ref", "p0", "p1", "judge"):
            (base / part).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = photos[i % len(photos)]
            y, x = rng.integers(0, img.shape[0] - 64), rng.integers(0, img.shape[1] - 64)
            ref = img[y:y + 64, x:x + 64]
            noisy = np.clip(ref + rng.normal(0, rng.uniform(0.02, 0.04), ref.shape), 0, 1)
            shifted = np.clip(ref + rng.choice([-1, 1]) * rng.uniform(0.06, 0.12), 0, 1)
            shift_is_p1 = bool(rng.integers(2))
            p0, p1 = (noisy, shifted) if shift_is_p1 else (shifted, noisy)
            for part, arr in (("ref", ref), ("p0", p0), ("p1", p1)):
                Image.fromarray((arr * 255 + 0.5).astype(np.uint8)).save(base / part / f"{i:06d}.png")
            np.save(base / "judge" / f"{i:06d}.npy", np.array([float(shift_is_p1)], dtype=np.float32))
    return root


def test_train_fits_the_mlp_head_through_metric_options(tmp_path: Path) -> None:
    from spips_bench.training.lpips_protocol import TrainConfig, _datasets, heldout_2afc, train

    torch.set_num_threads(1)
    root = _make_2afc(tmp_path / "set", n_train=40, n_val=20)
    cfg = TrainConfig(metric="spips-alex-st", dataset="bapps", root=str(root), epochs=2, decay_epochs=0,
                      batch_size=20, lr=1e-2, seed=0, metric_options={"head": "mlp"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedHeadsWarning)  # train labels epoch 0 itself: no warning
        res = train(cfg, tmp_path / "run", log=lambda s: None)
    h = [r.heldout_2afc for r in res.records]
    # the untrained MLP head is the untrained linear one (epoch 0); seed 0 measures 0.50 -> 0.65 -> 0.75
    _, heldout, _ = _datasets(cfg)
    assert h[0] == pytest.approx(heldout_2afc(SPIPS("alex-st"), heldout, torch.device("cpu")), abs=1e-9)
    assert h[-1] > h[0], h
    assert res.records[-1].loss < res.records[1].loss
    m = spips_bench.create_metric("spips-alex-st", head="mlp", checkpoint=res.final_checkpoint)
    assert m.trained and m.config()["head"] == "mlp"
    outs = [p for n, p in _heads(m).items() if "outs." in n or n.startswith("trad_head_out")]
    assert outs and all(float(p.min()) >= 0 for p in outs)
    assert any(float(p.min()) < 0 for n, p in _heads(m).items() if n.startswith("trad_head.") or ".convs." in n)
    with pytest.raises(WeightsIntegrityError, match="head"):
        spips_bench.create_metric("spips-alex-st", checkpoint=res.final_checkpoint)


# -- the warning about untrained heads ----------------------------------------------------------------

def test_untrained_spips_warns_once_per_variant_and_points_at_the_caller(fresh_warnings: None) -> None:
    with pytest.warns(UntrainedHeadsWarning) as record:
        SPIPS("alex", pretrained=False)
        spips_bench.create_metric("spips", pretrained=False)  # the same variant: no second warning
        SPIPS("alex", pretrained=False, head="mlp")
    assert len(record) == 1
    text = str(record[0].message)
    assert "spips:" in text and "untrained" in text and "data-free" in text
    assert "checkpoint=" in text and "spips-bench train" in text
    assert record[0].filename == __file__  # the user's line, not the zoo's
    with pytest.warns(UntrainedHeadsWarning, match="spips-abla1") as other:
        spips_bench.create_metric("spips-abla1", pretrained=False)  # another variant warns once more
    assert len(other) == 1 and other[0].filename == __file__


def test_no_warning_when_a_checkpoint_is_given(fresh_warnings: None, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadsWarning)
        path = SPIPS("alex-st").save_checkpoint(tmp_path / "heads.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedHeadsWarning)
        assert spips_bench.create_metric("spips-alex-st", checkpoint=path).trained is True
        assert SPIPS("alex-st", checkpoint=path).trained is True


def test_a_silenced_creation_does_not_use_up_the_warning(fresh_warnings: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadsWarning)
        SPIPS("alex-st")
    with pytest.warns(UntrainedHeadsWarning, match="spips-alex-st"):
        SPIPS("alex-st")


def test_a_run_labels_untrained_metrics_without_the_warning(fresh_warnings: None, tmp_path: Path) -> None:
    from spips_bench.run.config import RunConfig
    from spips_bench.run.runner import run_benchmark

    root = _make_2afc(tmp_path / "set", n_train=0, n_val=4)
    config = RunConfig(metrics=["spips-alex-st-abla2"], dataset="bapps", root=str(root), kinds=["2afc"],
                       categories=["traditional"], out=tmp_path / "run", workers=0, progress=False, bootstrap=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedHeadsWarning)
        result = run_benchmark(config)
    assert result.record["metrics"]["spips-alex-st-abla2"]["trained"] is False


def test_pyiqa_creation_warns_and_passes_the_checkpoint(fresh_warnings: None, tmp_path: Path) -> None:
    pyiqa = pytest.importorskip("pyiqa")
    from spips_bench.integrations.pyiqa import register, unregister

    register(["spips-alex-st-abla2"])
    try:
        with pytest.warns(UntrainedHeadsWarning, match="spips-alex-st-abla2") as record:
            pyiqa.create_metric("spips-alex-st-abla2", device="cpu")
        assert record[0].filename == __file__
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedHeadsWarning)
            path = SPIPS("alex-st", streams=("perceptual", "semantic")).save_checkpoint(tmp_path / "h.safetensors")
        with warnings.catch_warnings():
            warnings.simplefilter("error", UntrainedHeadsWarning)
            trained = pyiqa.create_metric("spips-alex-st-abla2", device="cpu", checkpoint=str(path))
        assert trained.net.metric.trained is True
    finally:
        unregister()


def test_score_labels_untrained_metrics_without_the_warning(fresh_warnings: None, tmp_path: Path,
                                                            photos: torch.Tensor,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from spips_bench.cli import main

    paths = []
    for name, img in (("ref.png", photos[0]), ("dist.png", _distorted(photos)[0])):
        arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedHeadsWarning)
        assert main(["score", *paths, "--metrics", "spips-alex-st-abla1"]) == 0
    assert "(untrained)" in capsys.readouterr().out


# -- the model card -----------------------------------------------------------------------------------

def test_the_model_card_names_every_trunk_and_variant() -> None:
    from spips_bench.registry import load_cards
    from spips_bench.zoo.backbones import TRUNKS

    card = (Path(__file__).resolve().parents[1] / "docs" / "spips-model-card.md").read_text(encoding="utf-8")
    # the package's own cards (not what another test registered at run time in this process)
    variants = [s.name for s in load_cards() if s.target == "spips_bench.zoo.spips.model:SPIPS"]
    assert len(variants) >= 9
    missing = [n for n in [*TRUNKS, *variants] if f"`{n}`" not in card]
    assert not missing, f"docs/spips-model-card.md does not name {missing}"
    for option in ("head", "head_channels", "checkpoint"):
        assert f"{option}=" in card, option


def test_the_model_card_quotes_the_installed_stlpips_licence() -> None:
    from importlib import metadata

    try:
        dist = metadata.distribution("stlpips_pytorch")
    except metadata.PackageNotFoundError:
        pytest.skip("stlpips-pytorch is not installed")
    card = (Path(__file__).resolve().parents[1] / "docs" / "spips-model-card.md").read_text(encoding="utf-8")
    licence = next(f for f in dist.files or [] if f.name == "LICENSE")
    first_line = licence.read_text(encoding="utf-8").splitlines()[0].strip()  # "BSD 2-Clause License"
    assert first_line.removesuffix(" License") in card
    assert f"stlpips_pytorch-{dist.version}.dist-info/licenses/LICENSE" in card
    header = (Path(str(dist.locate_file("stlpips_pytorch/models_lpf/downsample.py")))).read_text(encoding="utf-8")
    assert "NonCommercial-ShareAlike" in header and "CC BY-NC-SA 4.0" in card
