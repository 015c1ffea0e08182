"""`train`'s data options (load size, categories), its progress and time-left lines, the head option, and
checkpoints that are the same bytes (and SHA-256) when the same training runs twice.

Trainings here are tiny (a few demo triplets, one epoch) on the shift-tolerant SPIPS ablation, whose trunk
weights ship with stlpips-pytorch, so everything runs offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spips_bench.errors import DatasetError, RunConfigError
from spips_bench.training.lpips_protocol import TrainConfig, _datasets, stored_config, train

METRIC = "spips-alex-st-abla2"
#: the line `train` logs after each epoch: its numbers, its time, and the time left (or that it is done)
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): lr \S+, loss \S+, held-out 2AFC \S+ \((\d+ s|\d+ min \d\d s|"
                        r"\d+ h \d\d min); (about .+ left for \d+ more epochs?|training done)\)$")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _cfg(demo: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(metric=METRIC, dataset="demo", root=str(demo), epochs=1, decay_epochs=0,
                                   batch_size=5, lr=1e-3, seed=0, max_samples=10, heldout_max_samples=3,
                                   progress=False)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_categories_pick_the_training_data_and_the_held_out_set_stays_whole(demo: Path) -> None:
    from spips_bench.data.bapps import TWO_AFC_CATEGORIES, TwoAFCDataset

    cfg = _cfg(demo, categories=["cnn"], max_samples=None, heldout_max_samples=None)
    cfg.validate()
    train_ds, heldout, _ = _datasets(cfg)
    assert len(train_ds) == len(TwoAFCDataset(demo, "train", "cnn"))
    assert [c for c, _ in heldout] == list(TWO_AFC_CATEGORIES["val"])
    everything, _, _ = _datasets(_cfg(demo, max_samples=None))
    assert len(everything) == sum(len(TwoAFCDataset(demo, "train", c)) for c in TWO_AFC_CATEGORIES["train"])


@pytest.mark.parametrize("size", [48, None])
def test_the_load_size_reaches_training_and_held_out_patches(demo: Path, size: int | None) -> None:
    train_ds, heldout, _ = _datasets(_cfg(demo, load_size=size))
    native = 64  # the demo set's stored size
    assert tuple(train_ds[0]["ref"].shape) == (3, size or native, size or native)
    assert tuple(heldout[0][1][0]["p0"].shape) == (3, size or native, size or native)


def test_bad_data_options_name_the_value(demo: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has no category 'cnm'; choose from .* Did you mean 'cnn'"):
        train(_cfg(demo, categories=["cnm"]), tmp_path / "a")
    with pytest.raises(ValueError, match="load_size=0"):
        train(_cfg(demo, load_size=0), tmp_path / "b")
    partial = tmp_path / "partial"
    (partial / "2afc" / "train" / "cnn").mkdir(parents=True)
    with pytest.raises(DatasetError, match="mix"):
        _datasets(_cfg(partial, dataset="bapps", categories=["mix"]))


def test_patches_of_two_sizes_in_one_batch_at_the_stored_size_are_an_error(demo: Path, tmp_path: Path) -> None:
    import shutil

    from PIL import Image

    from spips_bench.data.bapps import TwoAFCDataset
    from spips_bench.training.lpips_protocol import _batches

    src, root = demo / "2afc" / "train" / "cnn", tmp_path / "mixed"
    for part in ("ref", "p0", "p1", "judge"):
        (root / "2afc" / "train" / "cnn" / part).mkdir(parents=True)
        for f in sorted((src / part).iterdir())[:4]:
            shutil.copy(f, root / "2afc" / "train" / "cnn" / part / f.name)
    odd = sorted((root / "2afc" / "train" / "cnn" / "ref").iterdir())[2]
    for part in ("ref", "p0", "p1"):
        path = odd.parent.parent / part / odd.name
        Image.open(path).resize((48, 48)).save(path)
    ds = TwoAFCDataset(root, "train", "cnn", None)
    with pytest.raises(DatasetError, match=rf"{odd.stem}\.png: ref is 48x48 px, but the other samples of its "
                                           "batch are 64x64 px"):
        list(_batches(ds, 4))
    assert len(list(_batches(ds, 1))) == 4  # one triplet per batch: every size trains
    assert len(list(_batches(TwoAFCDataset(root, "train", "cnn", 64), 4))) == 1


def test_each_epoch_logs_its_time_and_the_time_left(demo: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    train(_cfg(demo, epochs=2, decay_epochs=1, max_samples=5), tmp_path / "run", log=lines.append)
    epochs = [EPOCH_LINE.match(line) for line in lines if line.startswith("epoch ") and not line.startswith("epoch 0")]
    assert all(epochs), lines
    assert [(m.group(1), m.group(2)) for m in epochs] == [("1", "3"), ("2", "3"), ("3", "3")]  # type: ignore[union-attr]
    assert [m.group(4).split(" left")[0] != m.group(4) for m in epochs] == [True, True, False]  # type: ignore[union-attr]
    assert epochs[0].group(4).endswith("for 2 more epochs") and epochs[1].group(4).endswith("for 1 more epoch")  # type: ignore[union-attr]


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bars_go_to_stderr_unless_turned_off(demo: Path, tmp_path: Path, progress: bool,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    train(_cfg(demo, progress=progress), tmp_path / "run", log=lambda s: None)
    err = capsys.readouterr().err
    # a bar is drawn when it opens and when it closes, however long the epoch takes
    assert ("epoch 1/1" in err and "held-out 2AFC" in err and "triplet" in err) is progress, err


def test_train_json_stores_the_data_options_and_not_progress(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = _cfg(demo, epochs=1, decay_epochs=1, categories=["cnn", "mix"], load_size=None)
    train(cfg, out, log=lambda s: None)
    stored = json.loads((out / "train.json").read_text(encoding="utf-8"))["config"]
    assert stored["load_size"] is None and stored["categories"] == ["cnn", "mix"]
    assert "progress" not in stored and stored == stored_config(cfg)
    # a resume with progress on is the same configuration; another category set is not
    for name in ("epoch-002.json", "epoch-002.safetensors", "epoch-002.state.safetensors"):
        (out / name).unlink()
    messages: list[str] = []
    train(_cfg(demo, epochs=1, decay_epochs=1, categories=["cnn", "mix"], load_size=None, progress=True), out,
          log=messages.append)
    assert any("resuming" in m and "after epoch 1" in m for m in messages)
    with pytest.raises(RunConfigError, match="categories"):
        train(_cfg(demo, epochs=1, decay_epochs=1, categories=["cnn"], load_size=None), out, log=lambda s: None)


def test_a_folder_trained_before_the_data_options_existed_resumes(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = _cfg(demo, epochs=1, decay_epochs=1)
    train(cfg, out, log=lambda s: None)
    path = out / "train.json"
    old = json.loads(path.read_text(encoding="utf-8"))
    for key in ("load_size", "categories"):
        del old["config"][key]
    path.write_text(json.dumps(old), encoding="utf-8")
    for name in ("epoch-002.json", "epoch-002.safetensors", "epoch-002.state.safetensors"):
        (out / name).unlink()
    messages: list[str] = []
    train(cfg, out, log=messages.append)
    assert any("resuming" in m for m in messages)


def test_the_cli_passes_data_options_and_the_head(demo: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from spips_bench.cli import main
    from spips_bench.zoo.spips.checkpoint import read_checkpoint

    out = tmp_path / "cli"
    assert main(["train", "--metric", METRIC, "--dataset", "demo", "--root", str(demo), "--out", str(out),
                 "--epochs", "1", "--decay-epochs", "0", "--batch-size", "5", "--max-samples", "5",
                 "--heldout-max-samples", "2", "--lr", "1e-3", "--load-size", "native", "--categories", "mix",
                 "--head", "mlp", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert f"--checkpoint {METRIC}={out / 'final.safetensors'} --load-size native" in captured.out
    assert "epoch 1/1:" in captured.err and "triplet/s" not in captured.err  # the log line, no bar
    stored = json.loads((out / "train.json").read_text(encoding="utf-8"))["config"]
    assert stored["load_size"] is None and stored["categories"] == ["mix"]
    assert stored["metric_options"] == {"head": "mlp"}
    _, config, meta = read_checkpoint(out / "final.safetensors")
    assert config is not None and config["head"] == "mlp"
    assert meta["trained_on"] == "demo 2afc/train (mix)" and meta["load_size"] == "native"
    with pytest.raises(SystemExit):  # argparse: the choices are listed on stderr
        main(["train", "--metric", METRIC, "--out", str(tmp_path / "x"), "--head", "conv"])
    err = capsys.readouterr().err
    assert "argument --head: invalid choice: 'conv'" in err and "linear" in err and "mlp" in err


_SAVE = """
import hashlib, sys, torch
from spips_bench.zoo.spips.checkpoint import save_checkpoint
state = {f"w{i}": torch.arange(i + 1, dtype=torch.float32) for i in range(6)}
extra = {f"key{i}": str(i) for i in range(10)}
save_checkpoint(sys.argv[1], state, {"backbone": "alex", "streams": ["traditional"]}, extra)
"""

_TRAIN = """
import sys, torch
torch.set_num_threads(1)
from spips_bench.training.lpips_protocol import TrainConfig, train
cfg = TrainConfig(metric=sys.argv[1], dataset="demo", root=sys.argv[2], epochs=1, decay_epochs=0, batch_size=5,
                  lr=1e-3, seed=0, max_samples=10, heldout_max_samples=2, progress=False)
train(cfg, sys.argv[3], log=lambda s: None)
"""


def _in_process(code: str, args: list[str], seed: int) -> None:
    env = {**os.environ, "PYTHONHASHSEED": str(seed), "SPIPS_BENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env, timeout=600)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_state_saved_in_two_processes_is_the_same_file(tmp_path: Path) -> None:
    # safetensors writes metadata in the order of a Rust hash map seeded per process: 16 keys here, so
    # without a fixed order two processes agree by chance about once in 16! times.
    for seed in (1, 2):
        _in_process(_SAVE, [str(tmp_path / f"{seed}.safetensors")], seed)
    assert _sha(tmp_path / "1.safetensors") == _sha(tmp_path / "2.safetensors")
    from spips_bench.zoo.spips.checkpoint import read_checkpoint

    state, config, meta = read_checkpoint(tmp_path / "1.safetensors")
    assert config == {"backbone": "alex", "streams": ["traditional"]} and meta["key7"] == "7"
    assert torch.equal(state["w3"], torch.arange(4, dtype=torch.float32))


def test_the_same_training_twice_writes_the_same_checkpoint_bytes(demo: Path, tmp_path: Path) -> None:
    # Both processes run the same code on this machine with one thread each, so every kernel reduces in the
    # same order and the parameters are bit-identical; what remains is the file's layout, fixed by
    # save_checkpoint. (Two different hosts need not agree on the last bits of a float.)
    for seed in (11, 12):
        _in_process(_TRAIN, [METRIC, str(demo), str(tmp_path / f"run{seed}")], seed)
    a, b = tmp_path / "run11", tmp_path / "run12"
    assert _sha(a / "final.safetensors") == _sha(b / "final.safetensors")
    assert _sha(a / "epoch-001.state.safetensors") == _sha(b / "epoch-001.state.safetensors")
