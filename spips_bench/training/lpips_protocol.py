"""Training SPIPS heads on 2AFC judgments with the LPIPS protocol (Zhang et al., CVPR 2018).

For each triplet the metric gives ``d0 = D(p0, ref)`` and ``d1 = D(p1, ref)``; a small ranking head
(:class:`Dist2Logit`) maps ``(d0, d1)`` to the probability that raters prefer p1, trained with binary
cross-entropy against the judgment ``h``. Adam (lr 1e-4, betas 0.5/0.999), ``epochs`` epochs at the
full rate then ``decay_epochs`` epochs of linear decay (LPIPS's schedule), 1x1 weights clamped >= 0
after every step, backbone frozen unless ``tune``.

Each epoch writes into ``out``: ``epoch-NNN.safetensors`` (the metric's checkpoint, loadable with
``create_metric(name, checkpoint=...)``), ``epoch-NNN.state.safetensors`` (ranking head, optimiser,
random state: what resuming needs) and ``epoch-NNN.json`` (numbers and hashes, written last, so an epoch
counts only once all three exist). ``curve.csv``/``curve.png`` plot loss and held-out 2AFC per epoch;
``final.safetensors`` is the last epoch's checkpoint. Rerunning the same command resumes after the last
complete epoch and, on the CPU, reproduces an uninterrupted run exactly.

Held-out 2AFC: the val split of the same dataset (all its categories, the mean of per-category scores,
as LPIPS reports); if the val split is absent, a fixed 10% of the training triplets held out of training.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from spips_bench.errors import RunConfigError
from spips_bench.io import TEMP_SUFFIX, atomic_path, atomic_write_bytes, atomic_write_text, sha256_file

TRAIN_FORMAT = "spips-train/1"
HELDOUT_FRACTION = 0.1
#: :class:`TrainConfig` fields that change how a run is shown or read, never what it computes: they are not
#: stored in ``train.json``, so a resume may differ in them.
UNSTORED_FIELDS = ("progress", "cache")
#: Values of stored fields that a ``train.json`` written before they existed was trained with.
_EARLIER_DEFAULTS: dict[str, Any] = {"load_size": 64, "categories": None}


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in ``out/train.json``; a resume must match).

    Attributes:
        metric: registry name of a SPIPS variant (``spips``, ``spips-abla1``, ``spips-alex-st``, ...).
        dataset: ``"bapps"`` or ``"demo"`` (the synthetic set of :mod:`spips_bench.data.demo`).
        root: dataset root (holding ``2afc/``); ``None`` = the dataset's default location.
        split: training split (``"train"``).
        epochs, decay_epochs: epochs at the full learning rate, then epochs of linear decay.
        batch_size: triplets per step (LPIPS: 50).
        lr: Adam learning rate (LPIPS: 1e-4).
        seed: seeds initialisation, data order and dropout.
        tune: also train the backbone.
        device: torch device string.
        max_samples: use only this many training triplets (a fixed seeded subset), ``None`` = all.
        heldout_max_samples: cap on held-out triplets per category, ``None`` = all.
        metric_options: extra keyword arguments for the metric (e.g. ``{"pretrained": False}``,
            ``{"head": "mlp"}``).
        load_size: side in px of the bilinear resize of every patch (BAPPS protocol: 64); None keeps the
            stored size (a batch then needs patches of one size).
        categories: the training categories of ``split`` (None: all present); the held-out val
            categories are always all of them.
        progress: a progress bar per epoch on stderr (not stored: a resume may change it).
        cache: read the patches through the decoded-patch cache (:mod:`spips_bench.data.cache`), shared
            with ``spips-bench run``; the patches are the same either way (not stored).
    """

    metric: str = "spips"
    dataset: str = "bapps"
    root: str | None = None
    split: str = "train"
    epochs: int = 5
    decay_epochs: int = 5
    batch_size: int = 50
    lr: float = 1e-4
    seed: int = 0
    tune: bool = False
    device: str = "cpu"
    max_samples: int | None = None
    heldout_max_samples: int | None = None
    metric_options: dict[str, Any] = field(default_factory=dict)
    load_size: int | None = 64
    categories: list[str] | None = None
    progress: bool = True
    cache: bool = True

    def validate(self) -> None:
        """Check every option (category names against BAPPS's for the split).

        Raises:
            ValueError: the option, its value and what it takes.
        """
        from spips_bench.data.bapps import resolve_categories

        if self.dataset not in ("bapps", "demo"):
            raise ValueError(f"dataset={self.dataset!r}: use 'bapps' or 'demo'.")
        size = self.load_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"load_size={size!r} must be a positive number of pixels or None (stored size).")
        if self.categories is not None:
            if not self.categories:
                raise ValueError("categories=[] names no category; pass None to train on all of them.")
            self.categories = resolve_categories("2afc", self.split, list(self.categories))
        for name in ("epochs", "decay_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}={v!r} must be a non-negative integer.")
        if self.epochs + self.decay_epochs < 1:
            raise ValueError("epochs + decay_epochs must be at least 1.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive integer.")
        if not (isinstance(self.lr, float | int) and 0 < self.lr < 1):
            raise ValueError(f"lr={self.lr!r} must be in (0, 1), e.g. 1e-4.")
        for name in ("max_samples", "heldout_max_samples"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}={v!r} must be a positive integer or None.")


class Dist2Logit(torch.nn.Module):
    """LPIPS's ranking head: ``(d0, d1)`` -> probability that p1 is preferred.

    Input features ``d0, d1, d0 - d1, d0 / (d1 + eps), d1 / (d0 + eps)``, 1x1 convolutions
    5 -> 32 -> 32 -> 1 with LeakyReLU(0.2), then a sigmoid.
    """

    def __init__(self, hidden: int = 32, eps: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(5, hidden, 1), torch.nn.LeakyReLU(0.2),
            torch.nn.Conv2d(hidden, hidden, 1), torch.nn.LeakyReLU(0.2),
            torch.nn.Conv2d(hidden, 1, 1), torch.nn.Sigmoid(),
        )

    def forward(self, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        d0, d1 = d0.view(-1, 1, 1, 1), d1.view(-1, 1, 1, 1)
        x = torch.cat([d0, d1, d0 - d1, d0 / (d1 + self.eps), d1 / (d0 + self.eps)], dim=1)
        return self.net(x).view(-1)


def lr_at_epoch(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of 1-based ``epoch``: LPIPS keeps the full rate through epoch ``epochs + 1`` and
    lowers it by ``lr / decay_epochs`` after each later epoch."""
    if cfg.decay_epochs == 0:
        return float(cfg.lr)
    k = max(0, epoch - cfg.epochs - 1)
    return float(cfg.lr) * (1.0 - k / cfg.decay_epochs)


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    loss: float
    heldout_2afc: float


@dataclass
class TrainResult:
    out: Path
    final_checkpoint: Path
    records: list[EpochRecord]
    heldout: str


# -- data ---------------------------------------------------------------------------------------------

def _datasets(cfg: TrainConfig) -> tuple[Any, list[tuple[str, Any]], str]:
    from torch.utils.data import ConcatDataset, Subset

    from spips_bench.data.bapps import TWO_AFC_CATEGORIES, TwoAFCDataset, default_bapps_root

    if cfg.dataset == "demo":
        from spips_bench.data.demo import ensure_demo

        root = ensure_demo(cfg.root)
    else:
        root = Path(cfg.root) if cfg.root else default_bapps_root()
    # Every category folder present is used (a partial download trains on what is there); with none
    # present, the loader's error names the missing folder and the download command. A category named in
    # `categories` must be there (the loader's error names it).
    cats = cfg.categories or [c for c in TWO_AFC_CATEGORIES[cfg.split]
                              if (Path(root) / "2afc" / cfg.split / c).is_dir()]
    size = cfg.load_size
    train_parts = [TwoAFCDataset(root, cfg.split, c, size, cache=cfg.cache)
                   for c in cats or TWO_AFC_CATEGORIES[cfg.split][:1]]
    train: Any = ConcatDataset(train_parts)
    val_split = "val" if cfg.split != "val" else None
    heldout: list[tuple[str, Any]] = []
    if val_split is not None and (Path(root) / "2afc" / val_split).is_dir():
        for c in TWO_AFC_CATEGORIES[val_split]:
            if (Path(root) / "2afc" / val_split / c).is_dir():
                ds: Any = TwoAFCDataset(root, val_split, c, size, cache=cfg.cache)
                if cfg.heldout_max_samples is not None and len(ds) > cfg.heldout_max_samples:
                    ds = Subset(ds, range(cfg.heldout_max_samples))
                heldout.append((c, ds))
        description = f"{cfg.dataset} 2afc/{val_split} ({', '.join(c for c, _ in heldout)})"
    if not heldout:
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + 7919)).tolist()
        n_held = max(1, round(HELDOUT_FRACTION * len(train)))
        held_idx = perm[:n_held]
        if cfg.heldout_max_samples is not None:
            held_idx = held_idx[: cfg.heldout_max_samples]
        heldout = [(cfg.split, Subset(train, held_idx))]
        train = Subset(train, perm[n_held:])
        description = f"{cfg.dataset} 2afc/{cfg.split}: {len(held_idx)} triplets held out of training"
    if cfg.max_samples is not None and len(train) > cfg.max_samples:
        sub = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + 104729))
        train = Subset(train, sorted(sub[: cfg.max_samples].tolist()))
    return train, heldout, description


def _loader(ds: Any, batch_size: int, order: Sequence[int] | None = None) -> Any:
    from torch.utils.data import DataLoader, Subset

    from spips_bench.data.bapps import collate

    if order is not None:
        ds = Subset(ds, list(order))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)


def _batches(ds: Any, batch_size: int, order: Sequence[int] | None = None) -> Any:
    """The batches of :func:`_loader`, refusing one whose patches are not all of one size.

    Raises:
        DatasetError: at the stored size, a patch whose size differs from its batch's (named, with the fix).
    """
    from spips_bench.errors import DatasetError

    for batch in _loader(ds, batch_size, order):
        problems = batch.get("problems")
        if problems:
            first = problems[0]
            raise DatasetError(f"{first.get('file', first.get('name'))}: {first.get('reason')}.")
        yield batch


def _bar(total: int, desc: str, enabled: bool) -> Any:
    """A progress bar on stderr in the style of ``spips-bench run`` (rate and time left per epoch)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="triplet", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def _duration(seconds: float) -> str:
    """``seconds`` as ``"42 s"``, ``"3 min 05 s"`` or ``"2 h 07 min"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def heldout_2afc(metric: Any, heldout: list[tuple[str, Any]], device: torch.device,
                 batch_size: int = 50, *, progress: bool = False) -> float:
    """Mean over categories of the 2AFC score of ``metric`` (three backbone passes per triplet).

    ``progress``: a progress bar over the held-out triplets on stderr.
    """
    import numpy as np

    from spips_bench.stats.core import two_afc_score

    was_training = metric.training
    metric.eval()
    scores = []
    bar = _bar(sum(len(ds) for _, ds in heldout), "held-out 2AFC", progress)
    with torch.no_grad(), bar:
        for _, ds in heldout:
            d0s, d1s, hs = [], [], []
            for batch in _batches(ds, batch_size):
                ref, p0, p1 = (batch[k].to(device) for k in ("ref", "p0", "p1"))
                fr = metric.features(ref)
                d0s.append(metric.compare(metric.features(p0), fr).cpu())
                d1s.append(metric.compare(metric.features(p1), fr).cpu())
                hs.append(batch["judge"])
                bar.update(len(batch["name"]))
            scores.append(two_afc_score(torch.cat(d0s).numpy(), torch.cat(d1s).numpy(),
                                        torch.cat(hs).numpy()))
    metric.train(was_training)
    return float(np.mean(scores))


# -- state files ----------------------------------------------------------------------------------------

def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, json.dumps({"param_groups": sd["param_groups"], "scalars": scalars})


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: str) -> None:
    info = json.loads(meta)
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for pid, sc in info["scalars"].items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _epoch_paths(out: Path, epoch: int) -> tuple[Path, Path, Path]:
    stem = out / f"epoch-{epoch:03d}"
    return (stem.with_suffix(".safetensors"), stem.with_name(stem.name + ".state.safetensors"),
            stem.with_suffix(".json"))


def _last_complete_epoch(out: Path, total: int) -> int:
    last = 0
    for e in range(1, total + 1):
        if all(p.is_file() for p in _epoch_paths(out, e)):
            last = e
        else:
            break
    return last


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", error=None)


def stored_config(cfg: TrainConfig) -> dict[str, Any]:
    """The fields of ``cfg`` that ``train.json`` holds: all but :data:`UNSTORED_FIELDS`."""
    return {k: v for k, v in asdict(cfg).items() if k not in UNSTORED_FIELDS}


def _check_run_config(out: Path, cfg: TrainConfig) -> None:
    path = out / "train.json"
    mine: dict[str, Any] = {"format": TRAIN_FORMAT, "config": stored_config(cfg)}
    if path.is_file():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(theirs.get("config"), dict):  # written before some fields existed: their defaults
            theirs["config"] = {**_EARLIER_DEFAULTS, **theirs["config"]}
        if theirs != mine:
            old, new = theirs.get("config", {}), mine["config"]
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise RunConfigError(
                f"{out} holds a training run with a different configuration (differs in: "
                f"{', '.join(diff) or 'format'}). Use another --out folder, or the same options to resume."
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(path, mine)


# -- the loop -------------------------------------------------------------------------------------------

def train(cfg: TrainConfig, out: str | os.PathLike[str], *,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume training) a SPIPS variant's heads; see the module docstring for what is written.

    Args:
        cfg: the run's configuration.
        out: output folder; if it holds epochs of the same configuration, training resumes after them.
        log: called with one line per event (default: print to stderr).

    Returns:
        The output folder, the final checkpoint and one record per epoch (epoch 0 = before training).

    Raises:
        ValueError: a bad option or a metric that is not a SPIPS variant.
        RunConfigError: ``out`` holds a run with other options.
        DatasetError: the dataset is missing or malformed.
    """
    import sys
    import warnings

    from safetensors.torch import load_file

    from spips_bench.errors import UntrainedHeadsWarning
    from spips_bench.registry import create_metric
    from spips_bench.zoo.spips.model import SPIPS

    emit = log or (lambda s: print(s, file=sys.stderr))
    cfg.validate()
    out = Path(out)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    with warnings.catch_warnings():  # untrained is the starting point here, and epoch 0 says so
        warnings.simplefilter("ignore", UntrainedHeadsWarning)
        metric = create_metric(cfg.metric, **cfg.metric_options)
    if not isinstance(metric, SPIPS):
        raise ValueError(f"metric {cfg.metric!r} is not a SPIPS variant; `train` fits SPIPS heads only.")
    train_ds, heldout, heldout_desc = _datasets(cfg)
    _check_run_config(out, cfg)
    metric.to(device)
    if metric.trunk is not None:
        metric.trunk.requires_grad_(cfg.tune)
    rank = Dist2Logit().to(device)
    params = [*metric.head_parameters(), *rank.parameters()]
    if cfg.tune and metric.trunk is not None:
        params += list(metric.trunk.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.5, 0.999))
    total = cfg.epochs + cfg.decay_epochs

    records: list[EpochRecord] = []
    start = _last_complete_epoch(out, total)
    curve_path = out / "curve.csv"
    if start > 0:
        heads, state, meta = _epoch_paths(out, start)
        metric.load_checkpoint(heads)
        tensors = load_file(str(state))
        rank.load_state_dict({k[len("rank."):]: v for k, v in tensors.items() if k.startswith("rank.")})
        info = json.loads(meta.read_text(encoding="utf-8"))
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        _restore_optimizer(opt, optim_tensors, info["optimizer"])
        torch.set_rng_state(tensors["rng.cpu"])
        records = [EpochRecord(**r) for r in info["records"]]
        emit(f"resuming {out} after epoch {start} of {total}")
    else:
        h0 = heldout_2afc(metric, heldout, device, cfg.batch_size, progress=cfg.progress)
        records.append(EpochRecord(epoch=0, lr=0.0, loss=float("nan"), heldout_2afc=h0))
        emit(f"epoch 0 (data-free initialisation): held-out 2AFC {h0:.4f} on {heldout_desc}")

    bce = torch.nn.BCELoss()
    spent: list[float] = []  # seconds of each epoch of this invocation, for the time left
    for epoch in range(start + 1, total + 1):
        began = time.perf_counter()
        lr = lr_at_epoch(epoch, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        # The data order depends only on (seed, epoch), so a resumed run sees the same batches.
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        order = torch.randperm(len(train_ds), generator=gen)
        metric.train()
        if metric.trunk is not None and not cfg.tune:
            metric.trunk.eval()  # frozen: no dropout/batch-norm updates in the backbone
        rank.train()
        loss_sum, seen = 0.0, 0
        with _bar(len(train_ds), f"epoch {epoch}/{total}", cfg.progress) as bar:
            for batch in _batches(train_ds, cfg.batch_size, order.tolist()):
                ref, p0, p1 = (batch[k].to(device) for k in ("ref", "p0", "p1"))
                judge = batch["judge"].to(device)
                fr = metric.features(ref)
                d0 = metric.compare(metric.features(p0), fr)
                d1 = metric.compare(metric.features(p1), fr)
                loss = bce(rank(d0, d1), judge)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                metric.clamp_nonnegative()
                loss_sum += float(loss.detach()) * len(judge)
                seen += len(judge)
                bar.update(len(judge))
        h = heldout_2afc(metric, heldout, device, cfg.batch_size, progress=cfg.progress)
        rec = EpochRecord(epoch=epoch, lr=lr, loss=loss_sum / max(seen, 1), heldout_2afc=h)
        records.append(rec)
        _save_epoch(out, epoch, metric, rank, opt, records, cfg, heldout_desc)
        spent.append(time.perf_counter() - began)
        left = total - epoch
        eta = (f"about {_duration(sum(spent) / len(spent) * left)} left for {left} more epoch{'s' * (left > 1)}"
               if left else "training done")
        emit(f"epoch {epoch}/{total}: lr {lr:.3g}, loss {rec.loss:.4f}, held-out 2AFC {h:.4f} "
             f"({_duration(spent[-1])}; {eta})")

    final = out / "final.safetensors"
    last_heads = _epoch_paths(out, total)[0]
    atomic_write_bytes(final, last_heads.read_bytes(), error=None)
    _write_curve(curve_path, records)
    try:
        _plot_curve(out / "curve.png", records, cfg, heldout_desc)
    except ModuleNotFoundError:  # matplotlib is optional; the CSV holds the same numbers
        emit("matplotlib is not installed, so curve.png was not drawn (pip install spips-bench[plot]); "
             f"the numbers are in {curve_path}")
    return TrainResult(out=out, final_checkpoint=final, records=records, heldout=heldout_desc)


def _save_epoch(out: Path, epoch: int, metric: Any, rank: torch.nn.Module, opt: torch.optim.Optimizer,
                records: list[EpochRecord], cfg: TrainConfig, heldout_desc: str) -> None:
    from spips_bench.zoo.spips.checkpoint import deterministic_safetensors

    heads, state, meta = _epoch_paths(out, epoch)
    trained_on = f"{cfg.dataset} 2afc/{cfg.split}" + (f" ({', '.join(cfg.categories)})" if cfg.categories else "")
    metric.save_checkpoint(heads, include_backbone=cfg.tune,
                           extra={"epoch": str(epoch), "trained_on": trained_on,
                                  "load_size": str(cfg.load_size or "native")})
    opt_tensors, opt_meta = _flatten_optimizer(opt)
    tensors = {**{f"rank.{k}": v.detach().cpu().contiguous() for k, v in rank.state_dict().items()},
               **{k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()},
               "rng.cpu": torch.get_rng_state()}
    atomic_write_bytes(state, deterministic_safetensors(tensors), error=None)
    _write_json(meta, {
        "epoch": epoch, "config": stored_config(cfg), "heldout": heldout_desc,
        "records": [asdict(r) for r in records], "optimizer": opt_meta,
        "sha256": {heads.name: sha256_file(heads), state.name: sha256_file(state)},
    })
    _write_curve(out / "curve.csv", records)


def _write_curve(path: Path, records: list[EpochRecord]) -> None:
    with atomic_path(path, error=None) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "lr", "loss", "heldout_2afc"])
        for r in records:
            w.writerow([r.epoch, f"{r.lr:.6g}", "" if math.isnan(r.loss) else f"{r.loss:.6f}",
                        f"{r.heldout_2afc:.6f}"])


def _plot_curve(path: Path, records: list[EpochRecord], cfg: TrainConfig, heldout_desc: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(6, 3.6), dpi=120)
    ep = [r.epoch for r in records if not math.isnan(r.loss)]
    ax1.plot(ep, [r.loss for r in records if not math.isnan(r.loss)], "o-", color="tab:red")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (BCE)", color="tab:red")
    ax2 = ax1.twinx()
    ax2.plot([r.epoch for r in records], [r.heldout_2afc for r in records], "s--", color="tab:blue")
    ax2.set_ylabel("held-out 2AFC score", color="tab:blue")
    label = " (synthetic judgments)" if cfg.dataset == "demo" else ""
    ax1.set_title(f"{cfg.metric} on {cfg.dataset}{label}\nheld out: {heldout_desc}", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=TEMP_SUFFIX + ".png", error=None) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
