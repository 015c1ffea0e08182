"""``spips-bench reproduce``: the SPIPS paper's experiment as resumable stages.

Stages, in order (each writes under ``OUT``):

1. ``data``: BAPPS 2AFC train (traditional, cnn, mix), 2AFC val and JND val, downloading what is missing
   (:func:`spips_bench.data.download.download_bapps`), or the synthetic demo set
   (:func:`spips_bench.data.demo.ensure_demo`); with ``max_samples`` a linked subset of the first samples
   of every category under ``OUT/data/subset``. Writes ``OUT/data/data.json``.
2. ``weights``: the weight files of the recipe's metrics, found or fetched as ``spips-bench weights
   fetch`` does. Writes ``OUT/weights.json``.
3. ``train/<metric>``, one per SPIPS model (full, ablation 1, ablation 2): the LPIPS protocol
   (:func:`spips_bench.training.lpips_protocol.train`) into ``OUT/train/<metric>/``.
4. ``scoring``: one run (:func:`spips_bench.run.runner.run_benchmark`) of the baselines and the three
   trained models on 2AFC val and JND val into ``OUT/run/``.
5. ``tables`` (paper layouts, ``OUT/tables/``), ``figures`` (the paper's Figs. 3-4, ``OUT/figures/``) and
   ``report`` (``OUT/report.md``, linking everything).

``OUT/stages.json`` records, per stage, the digest of its inputs (its options, the SHA-256 of what the
stages before it wrote, the package version and the recipe) and its outputs with their SHA-256. A stage
whose digest matches and whose outputs are all there unchanged is skipped; any other stage is done
again, and with it every stage that reads its outputs (their input digests change). A stage that was
interrupted resumes where it stopped when its inputs are the same (training after its last complete
epoch, scoring after its last stored batch); when they changed, its earlier output is discarded first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spips_bench.errors import DatasetError, SpipsBenchError, WeightsIntegrityError, WeightsUnavailableError
from spips_bench.io import atomic_write_text, sha256_file
from spips_bench.paper.recipe import Recipe, Variant, load_recipe, register_variants

STAGES_FORMAT = "spips-reproduce/1"
DATASETS = ("bapps", "demo")
#: LPIPS's schedule: epochs at the full learning rate, then epochs of linear decay.
PROTOCOL_EPOCHS = (5, 5)
#: What ``--offline`` data needs and which ``spips-bench download bapps --split`` fetches it.
_ARCHIVE_OF = {("2afc", "train"): "train", ("2afc", "val"): "2afc-val", ("jnd", "val"): "jnd"}
_SYNTHETIC_STATEMENT = "synthetic demo set, judgments simulated, not human"

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class StageOutcome:
    """What one stage did in this call: ``"done"`` (ran) or ``"skipped"`` (its outputs were current)."""

    name: str
    status: str
    seconds: float
    detail: str = ""


@dataclass
class ReproduceResult:
    """What :func:`reproduce` produced."""

    out: Path
    report: Path
    synthetic: bool
    stages: list[StageOutcome]
    checkpoints: dict[str, Path]
    tables: dict[str, Path] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def skipped(self) -> list[str]:
        return [s.name for s in self.stages if s.status == "skipped"]

    def done(self) -> list[str]:
        return [s.name for s in self.stages if s.status == "done"]


class StageFailedError(SpipsBenchError):
    """Fallback wrapper for a stage failure whose own exception type cannot carry the stage's message."""


# -- the stage book ---------------------------------------------------------------------------------------


def digest(inputs: Mapping[str, Any]) -> str:
    """SHA-256 of ``inputs`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class StageBook:
    """``OUT/stages.json``: per stage its input digest, status, outputs (relative path -> SHA-256) and time."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / "stages.json"
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{self.path}: unreadable stage record ({exc}); delete it to redo every "
                                   "stage (the stages' own files resume what they can).") from exc
            if not isinstance(data, dict) or data.get("format") != STAGES_FORMAT:
                raise DatasetError(f"{self.path}: not a {STAGES_FORMAT} stage record; use another --out "
                                   "or delete the file.")
            self.stages = dict(data.get("stages", {}))

    def _save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"format": STAGES_FORMAT, "stages": self.stages}, indent=2,
                                                sort_keys=True) + "\n")

    def current(self, name: str, key: str) -> bool:
        """Whether stage ``name`` finished with input digest ``key`` and its outputs are unchanged."""
        rec = self.stages.get(name)
        if not rec or rec.get("status") != "done" or rec.get("digest") != key:
            return False
        for rel, sha in rec.get("outputs", {}).items():
            p = self.out / rel
            if not p.is_file() or sha256_file(p) != sha:
                return False
        return True

    def begin(self, name: str, key: str) -> bool:
        """Mark ``name`` as running with ``key``; returns whether an earlier attempt had other inputs
        (its partial output must then be discarded rather than resumed)."""
        rec = self.stages.get(name)
        changed = rec is not None and rec.get("digest") != key
        self.stages[name] = {"digest": key, "status": "running", "started": _now()}
        self._save()
        return changed

    def fail(self, name: str, error: str) -> None:
        self.stages[name].update(status="failed", failed=_now(), error=error)
        self._save()

    def finish(self, name: str, outputs: Sequence[Path], seconds: float, info: Mapping[str, Any]) -> None:
        rec = self.stages[name]
        rec.update(status="done", finished=_now(), seconds=round(seconds, 3), info=dict(info),
                   outputs={p.relative_to(self.out).as_posix(): sha256_file(p) for p in outputs})
        rec.pop("error", None)
        self._save()

    def sha(self, name: str, rel: str) -> str:
        return str(self.stages[name]["outputs"][rel])

    def info(self, name: str) -> dict[str, Any]:
        return dict(self.stages.get(name, {}).get("info", {}))

    def seconds(self, name: str) -> float | None:
        v = self.stages.get(name, {}).get("seconds")
        return float(v) if v is not None else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class _Context:
    out: Path
    recipe: Recipe
    dataset: str
    backbone: str
    device: str
    epochs: int
    decay_epochs: int
    offline: bool
    max_samples: int | None
    progress: bool
    bootstrap: int
    log: Log
    book: StageBook
    variants: list[Variant]
    source_root: Path
    outcomes: list[StageOutcome] = field(default_factory=list)

    def base_inputs(self) -> dict[str, Any]:
        from spips_bench import __version__

        return {"version": __version__, "recipe": self.recipe.sha256}


def _stage(ctx: _Context, name: str, inputs: Mapping[str, Any],
           work: Callable[[bool], tuple[list[Path], dict[str, Any]]], eta: str = "") -> dict[str, Any]:
    """Run stage ``name`` unless it is current; returns its recorded info.

    ``work(changed)`` does the stage (``changed``: an earlier attempt had other inputs) and returns its
    output files and the info to record.
    """
    key = digest({**ctx.base_inputs(), **inputs})
    number = len(ctx.outcomes) + 1
    if ctx.book.current(name, key):
        ctx.outcomes.append(StageOutcome(name, "skipped", 0.0, "outputs current"))
        ctx.log(f"[{number}] {name}: skipped (inputs unchanged, outputs present)")
        return ctx.book.info(name)
    ctx.log(f"[{number}] {name}: running{eta}")
    changed = ctx.book.begin(name, key)
    t0 = time.perf_counter()
    try:
        outputs, info = work(changed)
    except KeyboardInterrupt:
        ctx.book.fail(name, "interrupted")
        raise
    except Exception as exc:
        ctx.book.fail(name, str(exc))
        raise _stage_error(name, exc) from exc
    seconds = time.perf_counter() - t0
    ctx.book.finish(name, outputs, seconds, info)
    ctx.outcomes.append(StageOutcome(name, "done", seconds))
    ctx.log(f"[{number}] {name}: done in {_duration(seconds)}")
    return info


def _stage_error(name: str, exc: Exception) -> Exception:
    """``exc`` with the stage named and how to resume, as the same exception type where it allows."""
    message = (f"reproduce stage {name!r} failed: {str(exc).rstrip('.')}. The stages finished before it are "
               "kept; fix the cause and rerun the same command to resume.")
    if isinstance(exc, SpipsBenchError | ValueError | FileNotFoundError):
        with contextlib.suppress(TypeError):
            return type(exc)(message)
    return StageFailedError(message)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


# -- stage 1: data ------------------------------------------------------------------------------------------


def _needed_parts() -> list[tuple[str, str, str]]:
    """``(kind, split, category)`` of everything the experiment reads."""
    from spips_bench.data.bapps import JND_CATEGORIES, TWO_AFC_CATEGORIES

    return ([("2afc", "train", c) for c in TWO_AFC_CATEGORIES["train"]]
            + [("2afc", "val", c) for c in TWO_AFC_CATEGORIES["val"]]
            + [("jnd", "val", c) for c in JND_CATEGORIES])


def missing_bapps(root: Path) -> list[str]:
    """``"kind/split/category"`` of every part of the experiment's data absent under ``root``."""
    return [f"{k}/{s}/{c}" for k, s, c in _needed_parts() if not (root / k / s / c).is_dir()]


def _download_splits(missing: Sequence[str]) -> list[str]:
    """The ``download bapps --split`` values that fetch ``missing``, in a fixed order."""
    wanted = {_ARCHIVE_OF[tuple(m.split("/")[:2])] for m in missing}  # type: ignore[index]
    return [s for s in ("2afc-val", "train", "jnd") if s in wanted]


def _offline_data_error(root: Path, missing: Sequence[str]) -> DatasetError:
    splits = _download_splits(missing)
    commands = " and ".join(f"`spips-bench download bapps --split {s} --root {root}`" for s in splits)
    return DatasetError(
        f"{root}: BAPPS lacks {', '.join(missing)}, and --offline forbids downloading it. Fetch it where there "
        f"is network with {commands} (all of it: `spips-bench download bapps --split all --root {root}`), or "
        "run the pipeline on the synthetic demo set with --dataset demo. Nothing was done.")


def _link_subset(source: Path, target: Path, n: int, synthetic: bool) -> None:
    """Hard-link (or copy) the first ``n`` samples of every category of ``source`` into ``target``."""
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for kind, split, cat in _needed_parts():
        src = source / kind / split / cat
        if not src.is_dir():
            continue
        parts = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not parts:
            continue
        stems = sorted({f.stem for f in parts[0].iterdir() if f.is_file() and not f.name.startswith(".")})[:n]
        keep = set(stems)
        for part in parts:
            dst = tmp / kind / split / cat / part.name
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted(part.iterdir()):
                if f.is_file() and f.stem in keep:
                    try:
                        os.link(f, dst / f.name)
                    except OSError:
                        shutil.copy2(f, dst / f.name)
    if synthetic:  # the subset stays the demo set: its marker keeps every result labelled synthetic
        from spips_bench.data.demo import _MARKER

        for name in (_MARKER, "README.txt"):
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def _stage_data(ctx: _Context) -> dict[str, Any]:
    from spips_bench.data.bapps import category_listing

    present = [] if ctx.dataset == "demo" else [f"{k}/{s}/{c}" for k, s, c in _needed_parts()
                                                 if (ctx.source_root / k / s / c).is_dir()]
    inputs = {"dataset": ctx.dataset, "root": str(ctx.source_root), "max_samples": ctx.max_samples,
              "present": present}

    def work(changed: bool) -> tuple[list[Path], dict[str, Any]]:
        if ctx.dataset == "demo":
            from spips_bench.data.demo import DEMO_VERSION, ensure_demo

            root = ensure_demo(ctx.source_root).resolve()
            origin = f"demo set v{DEMO_VERSION} at {root}"
        else:
            from spips_bench.data.download import download_bapps

            root = ctx.source_root
            missing = missing_bapps(root)
            for split in _download_splits(missing):
                ctx.log(f"downloading BAPPS {split} into {root} (missing: "
                        f"{', '.join(m for m in missing if _ARCHIVE_OF[tuple(m.split('/')[:2])] == split)})")  # type: ignore[index]
                download_bapps(root, split=split, progress=ctx.progress, log=ctx.log, offline=ctx.offline)
            still = missing_bapps(root)
            if still:
                raise DatasetError(f"{root}: BAPPS still lacks {', '.join(still)} after the download; check "
                                   "the archives' contents or download them by hand with `spips-bench download "
                                   f"bapps --split all --root {root}`.")
            origin = f"BAPPS at {root}"
        used = root
        if ctx.max_samples is not None:
            used = ctx.out / "data" / f"subset-{ctx.max_samples}"
            _link_subset(root, used, ctx.max_samples, ctx.dataset == "demo")
            origin += f", first {ctx.max_samples} samples of every category linked into {used}"
        parts: dict[str, Any] = {}
        for k, s, c in _needed_parts():
            folder = used / k / s / c
            if folder.is_dir():
                listing = category_listing(folder)
                stems = {stem for stem, _ in listing}
                parts[f"{k}/{s}/{c}"] = {"samples": len(stems), "listing_sha256": digest({"l": listing})}
        info = {"dataset": ctx.dataset, "synthetic": ctx.dataset == "demo", "root": str(used),
                "source_root": str(root), "max_samples": ctx.max_samples, "origin": origin, "parts": parts}
        path = ctx.out / "data" / "data.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True) + "\n")
        return [path], info

    return _stage(ctx, "data", inputs, work)


# -- stage 2: weights ---------------------------------------------------------------------------------------


def _weight_plan(ctx: _Context) -> dict[str, list[str]]:
    """Metric -> its weight files, for the baselines and the three models."""
    from spips_bench.registry import get_spec

    return {m: list(get_spec(m).weights) for m in [*ctx.recipe.baselines, *(v.metric for v in ctx.variants)]}


def _variant_weights_error(v: Variant, weight: str, reason: str, offline: bool) -> WeightsUnavailableError:
    where = ("offline, choose --backbone alex-st, whose trunk ships in the stlpips-pytorch wheel (pip install "
             "stlpips-pytorch)" if offline else "check the network, or choose --backbone alex-st, whose trunk "
             "ships in the stlpips-pytorch wheel (pip install stlpips-pytorch)")
    return WeightsUnavailableError(
        f"{v.metric} ({v.display}) needs the trunk weights {weight!r}, which are not available: "
        f"{reason.rstrip('.')}. Fetch them with `spips-bench weights fetch {weight}` where there is network, or "
        f"{where}.")


def _preflight_weights(ctx: _Context) -> None:
    """Offline: refuse before any work when a model to train lacks its trunk."""
    if not ctx.offline:
        return
    from spips_bench import weights

    plan = _weight_plan(ctx)
    for v in ctx.variants:
        for w in plan[v.metric]:
            if not weights.is_present(w):
                raise _variant_weights_error(v, w, "not on this machine and --offline forbids downloading",
                                             True)


def _stage_weights(ctx: _Context) -> dict[str, Any]:
    from spips_bench import weights

    plan = _weight_plan(ctx)
    names = list(dict.fromkeys(w for ws in plan.values() for w in ws))
    inputs = {"plan": plan, "present": {w: weights.is_present(w) for w in names}, "offline": ctx.offline}

    def work(changed: bool) -> tuple[list[Path], dict[str, Any]]:
        found: dict[str, Any] = {}
        for w in names:
            try:
                path = weights.resolve(w, offline=ctx.offline or None, progress=ctx.progress)
                found[w] = {"status": "present", "path": str(path), "sha256": weights.WEIGHTS[w].sha256}
            except (WeightsUnavailableError, WeightsIntegrityError) as exc:
                found[w] = {"status": "missing", "reason": str(exc)}
        skipped: dict[str, str] = {}
        for v in ctx.variants:
            for w in plan[v.metric]:
                if found[w]["status"] != "present":
                    raise _variant_weights_error(v, w, found[w]["reason"], ctx.offline)
        for m in ctx.recipe.baselines:
            lacking = [w for w in plan[m] if found[w]["status"] != "present"]
            if lacking:
                skipped[m] = (f"weights {', '.join(lacking)} not available"
                              + (" offline" if ctx.offline else "") + f": `spips-bench weights fetch "
                              f"{' '.join(lacking)}` where there is network")
                ctx.log(f"NOTICE: baseline {m} is left out: {skipped[m]}")
        info = {"weights": found, "skipped_baselines": skipped,
                "baselines": [m for m in ctx.recipe.baselines if m not in skipped]}
        path = ctx.out / "weights.json"
        atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True) + "\n")
        return [path], info

    return _stage(ctx, "weights", inputs, work)


# -- stage 3: training --------------------------------------------------------------------------------------


def _train_config(ctx: _Context, v: Variant, data: Mapping[str, Any]) -> Any:
    from spips_bench.training.lpips_protocol import TrainConfig

    metric, options = (v.metric, {}) if v.registered else (v.full_metric, {"streams": list(v.streams)})
    return TrainConfig(metric=metric, dataset=ctx.dataset, root=str(data["root"]), split="train",
                       epochs=ctx.epochs, decay_epochs=ctx.decay_epochs, device=ctx.device,
                       metric_options=options, load_size=ctx.recipe.load_size, progress=ctx.progress)


def _stage_train(ctx: _Context, v: Variant, data: Mapping[str, Any], eta: str) -> dict[str, Any]:
    from spips_bench.errors import RunConfigError
    from spips_bench.training.lpips_protocol import stored_config, train

    cfg = _train_config(ctx, v, data)
    stored = stored_config(cfg)
    folder = ctx.out / "train" / v.metric
    trunk = {w: ctx.book.info("weights")["weights"][w].get("sha256") for w in _weight_plan(ctx)[v.metric]}
    inputs = {"config": stored, "data": ctx.book.sha("data", "data/data.json"), "trunk": trunk}

    def work(changed: bool) -> tuple[list[Path], dict[str, Any]]:
        if changed and folder.exists():
            ctx.log(f"the inputs of {v.metric} changed: discarding the earlier training in {folder}")
            shutil.rmtree(folder)
        try:
            result = train(cfg, folder, log=ctx.log)
        except RunConfigError:  # an interrupted training of other options (no stage record said so)
            ctx.log(f"{folder} holds a training of other options: discarding it")
            shutil.rmtree(folder)
            result = train(cfg, folder, log=ctx.log)
        final = Path(result.final_checkpoint)
        outputs = [final, folder / "train.json"]
        info = {"metric": v.metric, "checkpoint": final.relative_to(ctx.out).as_posix(),
                "sha256": sha256_file(final), "heldout": result.heldout,
                "records": [asdict(r) for r in result.records]}
        return outputs, info

    return _stage(ctx, f"train/{v.metric}", inputs, work, eta)


# -- stage 4: scoring ---------------------------------------------------------------------------------------


def _stage_scoring(ctx: _Context, data: Mapping[str, Any], baselines: Sequence[str],
                   trained: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    from spips_bench.run.config import RunConfig
    from spips_bench.run.runner import run_benchmark

    run_dir = ctx.out / "run"
    metrics = [*baselines, *(v.metric for v in ctx.variants)]
    checkpoints = {m: ctx.out / info["checkpoint"] for m, info in trained.items()}
    inputs = {"metrics": metrics, "checkpoints": {m: info["sha256"] for m, info in trained.items()},
              "data": ctx.book.sha("data", "data/data.json"), "weights": ctx.book.sha("weights", "weights.json"),
              "device": ctx.device, "bootstrap": ctx.bootstrap, "load_size": ctx.recipe.load_size}

    def work(changed: bool) -> tuple[list[Path], dict[str, Any]]:
        config = RunConfig(metrics=metrics, split="val", dataset=ctx.dataset, root=Path(data["root"]),
                           out=run_dir, device=ctx.device, load_size=ctx.recipe.load_size,
                           bootstrap=ctx.bootstrap, checkpoints=checkpoints, offline=ctx.offline,
                           overwrite=changed, progress=ctx.progress)
        result = run_benchmark(config)
        record = result.record
        not_ok = {m: e.get("reason", e.get("status")) for m, e in record["metrics"].items()
                  if m in checkpoints and (e.get("status") == "skipped" or not e.get("trained"))}
        if not_ok:
            raise DatasetError(f"{run_dir}: the trained models {', '.join(not_ok)} were not scored as trained "
                               f"({json.dumps(not_ok)}).")
        info = {"status": record.get("status"), "duration_s": record.get("duration_s"),
                "throughput": record.get("throughput"), "categories": record.get("categories"),
                "metric_pairs_per_second": record.get("metric_pairs_per_second")}
        return [run_dir / "run.json"], info

    return _stage(ctx, "scoring", inputs, work)


# -- stage 5: tables, figures, report -----------------------------------------------------------------------


def _stage_tables(ctx: _Context, synthetic: bool, baselines: Sequence[str]) -> dict[str, Any]:
    from spips_bench.report.paper import write_paper_tables

    tables = ctx.out / "tables"
    display = {m: n for m, n in ctx.recipe.display(ctx.backbone).items()
               if m in baselines or m in {v.metric for v in ctx.variants}}
    rows = ctx.recipe.paper_rows(ctx.backbone)
    inputs = {"run": ctx.book.sha("scoring", "run/run.json"), "display": display, "paper_rows": rows,
              "baselines": list(baselines), "synthetic": synthetic}

    def work(changed: bool) -> tuple[list[Path], dict[str, Any]]:
        if tables.exists():
            shutil.rmtree(tables)
        paths = write_paper_tables(ctx.out / "run", tables, formats=("md", "tex"), compare_paper=True,
                                   display=display, paper_rows=rows, baselines=list(baselines),
                                   allow_synthetic=synthetic)
        files = sorted({Path(p) for p in paths.values() if Path(p).is_file()})
        return files, {"tables": {k: Path(p).relative_to(ctx.out).as_posix() for k, p in paths.items()}}

    return _stage(ctx, "tables", inputs, work)


def _stage_figures(ctx: _Context, data: Mapping[str, Any], trained: Mapping[str, dict[str, Any]]
                   ) -> dict[str, Any]:
    figures = ctx.out / "figures"
    full = ctx.variants[0]
    inputs = {"run": ctx.book.sha("scoring", "run/run.json"),
              "checkpoints": {m: info["sha256"] for m, info in trained.items()},
              "display": {v.metric: v.display for v in ctx.variants}}

    def work(changed: bool) -> tuple[list[Path], dict[str, Any]]:
        from spips_bench.report.figures import draw_disagreements, pick_triplets

        if figures.exists():
            shutil.rmtree(figures)
        figures.mkdir(parents=True)
        drawn: list[Path] = []
        info: dict[str, Any] = {"figures": []}
        run = ctx.out / "run"
        for number, other in ((3, ctx.variants[1]), (4, ctx.variants[2])):
            picked = pick_triplets(run, full.metric, other.metric, count=1)
            paths = draw_disagreements(run, full.metric, other.metric, figures, count=1, device=ctx.device,
                                       labels=(full.display, other.display)) if picked else []
            if not paths:
                ctx.log(f"NOTICE: no 2AFC triplet where {full.display} and {other.display} prefer different images "
                        f"and the raters side clearly with one of them; Fig. {number} is not drawn.")
                info["figures"].append({"figure": number, "compare": other.metric, "drawn": False})
                continue
            t = picked[0]
            path = paths[0].with_name(f"fig{number}-{paths[0].name}")
            paths[0].replace(path)
            drawn.append(path)
            info["figures"].append({"figure": number, "compare": other.metric, "drawn": True,
                                    "file": path.relative_to(ctx.out).as_posix(), "category": t.category,
                                    "sample": t.sample, "judge": t.judge, "sides_with": t.sides_with,
                                    "scores": {k: list(sc) for k, sc in t.scores.items()}})
        return drawn, info

    return _stage(ctx, "figures", inputs, work)


def _machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = f"CPU {cpu}, {os.cpu_count()} cores"
    if device.startswith("cuda"):
        import torch

        text += f"; GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text


def _report_text(ctx: _Context, data: Mapping[str, Any], weights_info: Mapping[str, Any],
                 trained: Mapping[str, dict[str, Any]], tables: Mapping[str, Any], figures: Mapping[str, Any],
                 scoring: Mapping[str, Any]) -> str:
    from spips_bench import __version__

    synthetic = bool(data["synthetic"])
    lines = ["# SPIPS paper reproduction", ""]
    if synthetic:
        lines += [f"**Data: {_SYNTHETIC_STATEMENT}.** Every number below tests the software only; none of it "
                  "is comparable with the paper's values, and the comparison tables say so.", ""]
    else:
        lines += ["**Data: BAPPS** (2AFC train traditional, cnn, mix; 2AFC val; JND val), human judgments.", ""]
    lines += [
        f"- Data: {data['origin']}",
        f"- Resolution: {ctx.recipe.load_size} px (bilinear resize of every patch, the BAPPS protocol)",
        f"- Backbone: {ctx.backbone}",
        f"- Training: LPIPS protocol, {ctx.epochs} epochs + {ctx.decay_epochs} decay epochs",
        f"- Device: {ctx.device}; machine: {_machine(ctx.device)}",
        f"- spips-bench {__version__}",
        "",
        "## Models", "",
        "| model | shown as | checkpoint | sha256 | held-out 2AFC | curve |",
        "|---|---|---|---|---|---|",
    ]
    for v in ctx.variants:
        t = trained[v.metric]
        held = t["records"][-1]["heldout_2afc"] if t.get("records") else float("nan")
        curve = Path(t["checkpoint"]).parent / "curve.csv"
        lines.append(f"| {v.metric} | {v.display} | [{t['checkpoint']}]({t['checkpoint']}) | `{t['sha256']}` | "
                     f"{held:.4f} | [{curve.as_posix()}]({curve.as_posix()}) |")
    lines += ["", "Baselines scored: " + (", ".join(weights_info.get("baselines", [])) or "none")]
    for m, why in weights_info.get("skipped_baselines", {}).items():
        lines.append(f"- {m} left out: {why}")
    lines += ["", "## Tables", ""]
    for name, rel in sorted(tables.get("tables", {}).items()):
        lines.append(f"- [{name}]({rel})")
    lines += ["", "## Figures", ""]
    for f in figures.get("figures", []):
        if f.get("drawn"):
            who = "raters" if not synthetic else "simulated raters"
            lines.append(f"- Fig. {f['figure']} ({f['compare']}): [{f['file']}]({f['file']}), 2AFC {f['category']} "
                         f"sample {f['sample']}; fraction of {who} preferring p1: {f['judge']:.2f}, siding with "
                         f"{f['sides_with']}")
        else:
            lines.append(f"- Fig. {f['figure']} ({f['compare']}): not drawn (no triplet where the models "
                         "disagree and the raters side clearly with one)")
    lines += ["", "## Run", "", "- Run folder: [run/](run/) ([run.json](run/run.json))"]
    if scoring.get("throughput"):
        lines.append(f"- Scoring throughput: {scoring['throughput']}")
    lines += ["", "## Stages", "", "| stage | time | finished |", "|---|---|---|"]
    for name in (o.name for o in ctx.outcomes if o.name != "report"):
        rec = ctx.book.stages[name]
        secs = rec.get("seconds")
        lines.append(f"| {name} | {_duration(float(secs)) if secs is not None else '-'} | "
                     f"{rec.get('finished', '-')} |")
    lines += ["", "Stage records: [stages.json](stages.json).", ""]
    return "\n".join(lines)


def _stage_report(ctx: _Context, data: Mapping[str, Any], weights_info: Mapping[str, Any],
                  trained: Mapping[str, dict[str, Any]], tables: Mapping[str, Any], figures: Mapping[str, Any],
                  scoring: Mapping[str, Any]) -> Path:
    report = ctx.out / "report.md"
    upstream = {o.name: ctx.book.stages[o.name].get("outputs") for o in ctx.outcomes}
    inputs = {"upstream": upstream, "device": ctx.device}

    def work(changed: bool) -> tuple[list[Path], dict[str, Any]]:
        atomic_write_text(report, _report_text(ctx, data, weights_info, trained, tables, figures, scoring))
        return [report], {}

    _stage(ctx, "report", inputs, work)
    return report


# -- the pipeline -------------------------------------------------------------------------------------------


def reproduce(root: str | os.PathLike[str] | None, out: str | os.PathLike[str], *, dataset: str = "bapps",
              backbone: str = "alex", device: str = "auto", epochs: int | None = None,
              decay_epochs: int | None = None, offline: bool = False, max_samples: int | None = None,
              progress: bool = True, bootstrap: int = 1000, log: Log | None = None) -> ReproduceResult:
    """Reproduce the SPIPS paper into ``out`` (see the module docstring for the stages).

    Args:
        root: the BAPPS root (holding or receiving ``2afc/`` and ``jnd/``; None: ``$SPIPS_BENCH_BAPPS`` or
            ``./datasets/bapps``); with ``dataset="demo"`` where the demo set lives (None: the cache).
        out: the output folder; a rerun into it does only what is missing or whose inputs changed.
        dataset: ``"bapps"`` or ``"demo"`` (synthetic judgments: the pipeline's test, never the paper's
            numbers).
        backbone: the SPIPS trunk (``alex``, ``vgg``, ``squeeze``, ``alex-st``, ``vgg-st``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        epochs, decay_epochs: the training schedule; default LPIPS's 5 + 5. ``epochs`` alone sets
            ``decay_epochs`` to 0.
        offline: download nothing; what is missing is an error before any work (data, a trained model's
            trunk) or a baseline left out with a notice (its weights).
        max_samples: use only the first ``max_samples`` samples of every category (a quick trial).
        progress: progress bars and ETAs on stderr.
        bootstrap: bootstrap resamples of the run's intervals.
        log: receives one line per event (default: stderr).

    Returns:
        The folder, the report, what each stage did, the checkpoints, tables and figures.

    Raises:
        DatasetError: BAPPS parts missing offline (before any work), or a dataset problem in a stage.
        WeightsUnavailableError: a trained model's trunk is unavailable.
        ValueError: a bad option (unknown dataset or backbone, a non-positive count).
        SpipsBenchError: a stage failed (the message names it; finished stages are kept).
    """
    from spips_bench.settings import offline_mode
    from spips_bench.validation import resolve_device

    emit = log or _stderr
    if dataset not in DATASETS:
        raise ValueError(f"--dataset {dataset!r}: use {' or '.join(DATASETS)}.")
    for name, value in (("epochs", epochs), ("decay_epochs", decay_epochs), ("max_samples", max_samples)):
        if value is not None and (not isinstance(value, int) or value < (1 if name != "decay_epochs" else 0)):
            raise ValueError(f"--{name.replace('_', '-')} {value!r} must be a "
                             f"{'non-negative' if name == 'decay_epochs' else 'positive'} integer.")
    if epochs is None:
        epochs_n, decay_n = PROTOCOL_EPOCHS[0], PROTOCOL_EPOCHS[1] if decay_epochs is None else decay_epochs
    else:
        epochs_n, decay_n = epochs, 0 if decay_epochs is None else decay_epochs
    recipe = load_recipe()
    variants = recipe.variants(backbone)
    register_variants(variants)
    dev = str(resolve_device(device))
    out_path = Path(out).expanduser()
    if dataset == "demo":
        from spips_bench.data.demo import default_demo_root

        source = Path(root).expanduser() if root is not None else default_demo_root()
    else:
        from spips_bench.data.bapps import default_bapps_root

        source = (Path(root).expanduser() if root is not None else default_bapps_root()).resolve()
    with offline_mode(offline):
        from spips_bench.settings import offline as offline_now

        off = bool(offline) or offline_now()
        ctx = _Context(out=out_path, recipe=recipe, dataset=dataset, backbone=backbone, device=dev,
                       epochs=epochs_n, decay_epochs=decay_n, offline=off, max_samples=max_samples,
                       progress=progress, bootstrap=bootstrap, log=emit, book=StageBook(out_path),
                       variants=variants, source_root=source)
        # Before any work: what an offline machine lacks is named now, not after an hour of training.
        if dataset == "bapps" and off:
            missing = missing_bapps(source)
            if missing:
                raise _offline_data_error(source, missing)
        _preflight_weights(ctx)
        return _pipeline(ctx)


def _pipeline(ctx: _Context) -> ReproduceResult:
    t0 = time.perf_counter()
    data = _stage_data(ctx)
    weights_info = _stage_weights(ctx)
    baselines = list(weights_info.get("baselines", []))
    trained: dict[str, dict[str, Any]] = {}
    spent: list[float] = []
    for i, v in enumerate(ctx.variants):
        eta = ""
        if spent:
            left = (len(ctx.variants) - i) * (sum(spent) / len(spent))
            eta = f" (ETA for the {len(ctx.variants) - i} trainings left: about {_duration(left)})"
        n = len(ctx.outcomes)
        trained[v.metric] = _stage_train(ctx, v, data, eta)
        if ctx.outcomes[n].status == "done":
            spent.append(ctx.outcomes[n].seconds)
    scoring = _stage_scoring(ctx, data, baselines, trained)
    tables = _stage_tables(ctx, bool(data["synthetic"]), baselines)
    figures = _stage_figures(ctx, data, trained)
    report = _stage_report(ctx, data, weights_info, trained, tables, figures, scoring)
    seconds = time.perf_counter() - t0
    return ReproduceResult(
        out=ctx.out, report=report, synthetic=bool(data["synthetic"]), stages=ctx.outcomes,
        checkpoints={m: ctx.out / t["checkpoint"] for m, t in trained.items()},
        tables={k: ctx.out / p for k, p in tables.get("tables", {}).items()},
        figures=[ctx.out / f["file"] for f in figures.get("figures", []) if f.get("drawn")], seconds=seconds)

