"""The BAPPS runner: metrics x categories -> per-sample scores in a :class:`~spips_bench.run.store.ScoreStore`.

Data flow: a ``DataLoader`` (workers decode and resize, :func:`spips_bench.data.bapps.collate` stacks)
feeds fixed batches of ``batch_size`` consecutive samples to every metric on the chosen device, under
``torch.inference_mode`` and, with ``amp``, autocast (bfloat16 on CPU, float16 on CUDA). Scores reach
the store every ``flush_every`` batches; a rerun skips batches already stored, and because batches are
always the same runs of consecutive samples, the resumed store equals an uninterrupted one byte for byte.

Argument order follows the metric contract ``metric(dist, ref)``:

* 2AFC: ``d0 = metric(p0, ref)``, ``d1 = metric(p1, ref)``. A metric with the ``features``/``compare``
  fast path costs three feature passes per triplet (ref, p0, p1) instead of four. Metrics whose trunks
  are the same network with the same weights (equal ``trunk_key()``) share those passes: one trunk pass
  per image per batch for the whole group (:func:`score_shared`).
* JND: ``d = metric(p0, p1)``, i.e. ``p0`` is scored as the distorted image and ``p1`` is the reference.

An infinite score (PSNR of identical images is +inf) is stored as ``inf``/``-inf`` and is an ordered
value in the statistics, as in the official LPIPS evaluation (only the Pearson correlations, which need
finite values, leave it out). A NaN score (the metric failed) is stored as ``nan``, reported per sample,
and excluded from every statistic of its metric. A metric added to a folder scores only the batches it
lacks: the metrics already stored are not run again.

A sample whose files cannot be used (unreadable, corrupt, unpaired, a judgment outside [0, 1], images
of different sizes at the native load size) stops the run with ``on_error="fail"``: the error names the
file and the problem, everything scored before stays stored, and a rerun resumes. With
``on_error="skip"`` the run goes on; the sample gets no row in the store (no scores, no judgment), is
listed with its file and reason under ``"skipped"`` in ``run.json``, and the tables footnote the count.
Its batch counts as unfinished, so every rerun tries the sample again (a repaired file is picked up).

Under ``torchrun`` (``WORLD_SIZE > 1``) each rank takes the batches ``rank, rank + world, ...`` of each
category, writes them under ``parts/rank<r>/``, and rank 0 merges the parts and writes the reports
(:mod:`spips_bench.run.distributed`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spips_bench.errors import DatasetError, ImageReadError, RunConfigError, StoreWriteError
from spips_bench.report.build import write_reports
from spips_bench.run.config import BUILTIN_DATASETS, RunConfig
from spips_bench.run.distributed import _Dist, _maybe_lock
from spips_bench.run.plan import (
    ActiveMetric,
    absent_notice,
    build_metrics,
    data_listing,
    plan_on_disk,
    resolve_plan,
    use_offline,
)
from spips_bench.run.record import (
    check_fingerprint,
    describe_run,
    json_safe,
    listing_digests,
    nonfinite_samples,
    package_versions,
    start_record,
    stored_exclusions,
)
from spips_bench.run.store import ScoreStore
from spips_bench.stats.kinds import JudgmentKind, judgment_kind

#: Called after every flush of the store with (kind, category, batches flushed so far in this category).
FlushHook = Callable[[str, str, int], None]


@dataclass
class _Tally:
    """What one category's scoring counts: image conversions seen, seconds spent in each metric, and
    the samples skipped under ``on_error="skip"``."""

    conversions: Counter[str]
    seconds: dict[str, float]
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: Pair scores computed per metric (a metric that already holds a batch does not score it again).
    pairs: Counter[str] = field(default_factory=Counter)
    #: Categories per patch-cache state (``"built"``, ``"reused"``, ``"off"``) and the seconds spent
    #: checking and building the cache.
    cache: Counter[str] = field(default_factory=Counter)
    cache_seconds: float = 0.0


@dataclass
class RunResult:
    """What :func:`run_benchmark` produced: the folder, its run record and the report paths."""

    out: Path
    record: dict[str, Any]
    reports: dict[str, Path] = field(default_factory=dict)


# -- setup -----------------------------------------------------------------------------------------------


def _device(requested: str, d: _Dist) -> Any:
    """The run's device (:func:`spips_bench.validation.resolve_device`); a GPU becomes the current one."""
    import torch

    from spips_bench.validation import resolve_device

    dev = resolve_device(requested, local_rank=d.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def _dataset(config: RunConfig, d: _Dist) -> tuple[str, Path]:
    """``(name, root)`` of the data to score; prints a notice when ``auto`` falls back to the demo set.

    A dataset plugin's root is ``--root`` or its own default, checked by its ``locate``. For BAPPS:
    a root that someone named (``--root`` or ``$SPIPS_BENCH_BAPPS``) must hold BAPPS, or be a demo set
    (its marker makes the scores "synthetic judgments" whatever ``--dataset`` says); only the default
    root ``./datasets/bapps`` falls back to the demo set under ``--dataset auto``.

    Raises:
        DatasetError: a named root, or the root of ``--dataset bapps``, that holds no BAPPS category of
            the split; a plugin's root that holds none of its data.
    """
    from spips_bench import settings
    from spips_bench.data.bapps import bapps_present
    from spips_bench.data.demo import is_demo_set
    from spips_bench.run.plan import download_hint

    if config.dataset not in BUILTIN_DATASETS:  # a plugin of the dataset registry
        from spips_bench.data.registry import get_dataset

        dataset = get_dataset(config.dataset)
        located = dataset.locate(config.root) if d.rank == 0 else None
        d.barrier()  # rank 0 prepares the data once (a plugin may generate it); the others then find it
        return dataset.name, located if located is not None else dataset.locate(config.root)
    if config.dataset == "demo":
        return "demo", _demo(config.root, d)
    source: str | None = "--root"
    if config.root is not None:
        bapps_root = Path(config.root).expanduser()
    else:
        bapps_root, env = settings.bapps_root()
        source = f"${env}" if env else None
    if is_demo_set(bapps_root):
        if d.rank == 0:
            print(f"NOTICE: {bapps_root} is the spips-bench demo set, not BAPPS: its judgments are synthetic, "
                  "and the tables say so.", file=sys.stderr)
        return "demo", _demo(bapps_root, d)
    if bapps_present(bapps_root, config.split):
        return "bapps", bapps_root.resolve()
    hint = download_hint(bapps_root, config.split)
    looked = (f"looked for {bapps_root}/2afc/{config.split}/<category>"
              + (f" and {bapps_root}/jnd/{config.split}/<category>" if config.split == "val" else ""))
    if source is not None or config.dataset == "bapps":
        named = f" (given by {source})" if source else ""
        raise DatasetError(
            f"{bapps_root}{named}: no BAPPS {config.split} here ({looked}). Point it at the folder that holds "
            f"2afc/ and jnd/, download BAPPS there with {hint}, or pass --dataset demo for the synthetic "
            "demo set.")
    if d.rank == 0:
        print(f"NOTICE: BAPPS not found under {bapps_root} ({looked}); running on the built-in demo set with "
              f"synthetic judgments. Download BAPPS with {hint}, or pass --root.", file=sys.stderr)
    return "demo", _demo(None, d)


def _native_min_size(config: RunConfig, active: list[ActiveMetric]) -> tuple[str, int] | None:
    """``(metric, px)``: the largest minimum side among ``active`` at the native load size, which each
    sample is checked against as it is read (a fixed load size is checked before, in ``build_metrics``)."""
    if config.load_size is not None or not active:
        return None
    size, name = max((int(getattr(a.metric, "min_size", 1)), a.name) for a in active)
    return (name, size) if size > 1 else None


def _demo(root: Path | None, d: _Dist) -> Path:
    """The resolved root of a complete demo set at ``root`` (None: the default cache folder)."""
    from spips_bench.data.demo import ensure_demo

    built = ensure_demo(root) if d.rank == 0 else None
    d.barrier()  # rank 0 generates the set once; the others then find it complete
    return (built if built is not None else ensure_demo(root)).resolve()


# -- scoring ---------------------------------------------------------------------------------------------


def _scores(metric: Any, dist: Any, ref: Any) -> Any:
    out = metric(dist, ref)
    return _check_output(metric, out, dist.shape[0])


def _check_output(metric: Any, out: Any, n: int) -> Any:
    import torch

    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n,):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"metric {type(metric).__name__} returned {shape} for a batch of {n}; the metric "
                         f"contract asks for a ({n},) tensor (flatten inside the metric).")
    return out.detach().float().cpu().double()


def score_batch(kind: str | JudgmentKind, metric: Any, batch: dict[str, Any]) -> list[Any]:
    """Per-sample scores of one batch already on the metric's device, one per score column of the kind.

    Each column is ``metric(dist, ref)`` on the kind's scored pair of batch entries: ``[d0, d1]`` with
    ``d0 = metric(p0, ref)``, ``d1 = metric(p1, ref)`` (2AFC) or ``[d]`` with ``d = metric(p0, p1)`` (JND).
    When pairs share a reference and the metric has the ``features``/``compare`` fast path, each image's
    features are computed once (three passes per 2AFC triplet instead of four), all of them with one
    :meth:`~spips_bench.metric.Metric.features_of` call (which may run them as one batch).

    Raises:
        ValueError: an unknown kind, or a metric output that is not one score per sample.
    """
    pairs = judgment_kind(kind).scored_pairs
    refs = [ref for _, ref in pairs]
    if not getattr(metric, "has_features", False) or len(set(refs)) == len(refs):
        return [_scores(metric, batch[dist], batch[ref]) for dist, ref in pairs]
    from spips_bench.validation import validate_pair

    min_size = int(getattr(metric, "min_size", 1))
    for dist, ref in pairs:
        validate_pair(batch[dist], batch[ref], min_size=min_size)
    names = list(dict.fromkeys([*refs, *(dist for dist, _ in pairs)]))  # each distinct image once, refs first
    images = [batch[name] for name in names]
    features_of = getattr(metric, "features_of", None)  # a Metric has it; a duck-typed plugin may not
    computed = features_of(images) if callable(features_of) else [metric.features(x) for x in images]
    feats = dict(zip(names, computed, strict=True))
    return [_check_output(metric, metric.compare(feats[dist], feats[ref]), batch[ref].shape[0])
            for dist, ref in pairs]


def trunk_groups(metrics: list[Any]) -> list[list[int]]:
    """Indices of ``metrics`` grouped by equal :meth:`~spips_bench.metric.Metric.trunk_key`, in order of
    first appearance; a metric without a key (or without the ``features``/``compare`` fast path) is
    alone in its group."""
    groups: list[list[int]] = []
    by_key: dict[Any, list[int]] = {}
    for i, metric in enumerate(metrics):
        key_of = getattr(metric, "trunk_key", None)
        key = key_of() if callable(key_of) and getattr(metric, "has_features", False) else None
        if key is None:
            groups.append([i])
        elif key in by_key:
            by_key[key].append(i)
        else:
            by_key[key] = [i]
            groups.append(by_key[key])
    return groups


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_shared(kind: str | JudgmentKind, metrics: list[Any], batch: dict[str, Any], *,
                 seconds: list[float] | None = None) -> list[list[Any]]:
    """:func:`score_batch` of each of ``metrics``, which share one trunk (equal ``trunk_key``).

    The first metric computes the trunk's output once per image of the kind (ref, p0, p1 for 2AFC; p0
    and p1 for JND); each metric turns it into its features (``features_from_trunk``) and scores its
    pairs with ``compare``. The trunk outputs are released when the group is scored. With ``seconds``
    (one entry per metric), each metric's own time plus an equal share of the trunk's is added to it.

    Raises:
        ValueError: an unknown kind, an input a metric rejects, or a metric output that is not one
            score per sample.
    """
    from spips_bench.validation import validate_pair

    pairs = judgment_kind(kind).scored_pairs
    min_size = max(int(getattr(metric, "min_size", 1)) for metric in metrics)
    for dist, ref in pairs:  # the same tensors for every metric of the group: checked once, at the largest minimum
        validate_pair(batch[dist], batch[ref], min_size=min_size)
    images = list(dict.fromkeys(name for pair in pairs for name in pair))
    device = batch[images[0]].device
    t0 = time.perf_counter()
    trunk = {name: metrics[0].trunk_features(batch[name]) for name in images}
    _sync(device)
    share = (time.perf_counter() - t0) / len(metrics)
    out: list[list[Any]] = []
    for m, metric in enumerate(metrics):
        t0 = time.perf_counter()
        feats = {name: metric.features_from_trunk(trunk[name], batch[name]) for name in images}
        cols = [_check_output(metric, metric.compare(feats[dist], feats[ref]), batch[ref].shape[0])
                for dist, ref in pairs]  # _check_output ends on the CPU: includes device sync
        del feats
        out.append(cols)
        if seconds is not None:
            seconds[m] += share + time.perf_counter() - t0
    return out


def _autocast(device: Any, amp: bool) -> contextlib.AbstractContextManager[Any]:
    import torch

    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _batches(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def _score_category(config: RunConfig, store: ScoreStore, d: _Dist, device: Any, root: Path, kind: str,
                    category: str, active: list[ActiveMetric], tally: _Tally, hook: FlushHook | None,
                    ) -> tuple[int, int]:
    """Score this rank's share of one category; returns (samples scored, samples in the category)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from spips_bench.data.bapps import collate
    from spips_bench.data.registry import get_dataset

    # Problems come back as items, so that the main process reports them (a worker's exception would
    # arrive wrapped in its traceback) and the policy decides. `auto` reads with BAPPS's readers.
    dataset = get_dataset("bapps" if config.dataset == "auto" else config.dataset)
    ds = dataset.reader(root, kind, config.split, category, config.load_size, report_problems=True,
                        min_size=_native_min_size(config, active))
    if ds.pairing_error is not None and config.on_error == "fail":
        raise DatasetError(f"{ds.pairing_error} Or pass --on-error skip to score the paired samples and "
                           "list the others in run.json.")
    names = list(ds.names)
    stored_judgments = set(store.read_judgments(kind, category))
    stored = [set(store.read_scores(kind, category, a.name)) for a in active]
    # Per batch, the metrics that miss one of its samples: a metric added to a folder scores alone.
    todo: list[list[int]] = []
    missing: list[list[int]] = []
    for b in _batches(len(names), config.batch_size)[d.rank::d.world]:
        lacking = [m for m, s in enumerate(stored) if not all(names[i] in s for i in b)]
        if lacking or not all(names[i] in stored_judgments for i in b):
            todo.append(b)
            missing.append(lacking)
    if not todo:
        return 0, len(names)
    if config.cache:  # decode the category once into the patch cache, or read what an earlier run decoded
        t0 = time.perf_counter()
        ds.use_cache(workers=config.workers, progress=config.progress and d.rank == 0)
        tally.cache[ds.cache_state] += 1
        tally.cache_seconds += time.perf_counter() - t0
    judgments = store.judgment_writer(kind, category)
    writers = [store.score_writer(kind, category, a.name) for a in active]
    cuda = device.type == "cuda"
    # Decoded patches come from a memory map: reading them costs less than handing them over from worker
    # processes (and starting those), so a cached category is read in this process.
    workers = 0 if ds.cache_state != "off" else config.workers
    loader = DataLoader(ds, batch_sampler=todo, num_workers=workers, collate_fn=collate, pin_memory=cuda)
    bar = tqdm(total=sum(map(len, todo)), desc=f"{kind}/{category}", unit="item", file=sys.stderr,
               disable=not config.progress or d.rank != 0, dynamic_ncols=True)
    done = 0

    def flush() -> None:
        store.flush([*writers, judgments])  # judgments last: a batch counts as stored only when they are

    try:
        with torch.inference_mode():
            for bi, batch in enumerate(loader):
                for problem in batch.get("problems", []):
                    _problem(config, kind, category, problem, tally, bar)
                samples = batch["name"]
                moved = {k: v.to(device, non_blocking=cuda) for k, v in batch.items()
                         if isinstance(v, torch.Tensor)}
                if samples:  # empty when every sample of the batch was skipped
                    _add_scores(config, kind, category, [active[m] for m in missing[bi]],
                                [writers[m] for m in missing[bi]], moved, samples, device, tally, bar)
                    for sample, value in zip(samples, batch[judgment_kind(kind).judgment_column].tolist(), strict=True):
                        judgments.add(sample, (float(value),))
                    tally.conversions.update(c for item in batch["conversions"] for c in item)
                done += len(samples)
                bar.update(len(samples) + len(batch.get("problems", [])))
                if (bi + 1) % config.flush_every == 0:
                    flush()
                    if hook is not None:
                        hook(kind, category, bi + 1)
    except BaseException as exc:
        try:
            flush()  # whatever finished stays stored, also on an interruption or a bad sample
        except StoreWriteError as failed:
            if failed is not exc and not isinstance(exc, StoreWriteError):
                exc.add_note(f"The scores since the last flush could not be stored either: {failed}")
        raise
    else:
        flush()
    finally:
        bar.close()
    return done, len(names)


def _add_scores(config: RunConfig, kind: str, category: str, active: list[ActiveMetric], writers: list[Any],
                moved: dict[str, Any], samples: list[str], device: Any, tally: _Tally, bar: Any) -> None:
    """Score one batch with the given metrics and hand the per-sample values to their store writers.

    ``inf``/``-inf`` are stored as such (ordered values, e.g. PSNR of identical images); a NaN score is
    stored as ``nan``, with a warning, and left out of the statistics. Metrics with equal trunk keys
    are scored together (:func:`score_shared`: one trunk pass per image); each is charged its own time
    plus an equal share of the trunk's.
    """
    for group in trunk_groups([a.metric for a in active]):
        if len(group) == 1:
            a = active[group[0]]
            t0 = time.perf_counter()
            with _autocast(device, config.amp):
                results = [score_batch(kind, a.metric, moved)]  # ends on the CPU: includes device sync
            spent = [time.perf_counter() - t0]
        else:
            spent = [0.0] * len(group)
            with _autocast(device, config.amp):
                results = score_shared(kind, [active[m].metric for m in group], moved, seconds=spent)
        for m, cols, seconds in zip(group, results, spent, strict=True):
            _store_scores(kind, category, active[m].name, writers[m], cols, samples, seconds, tally, bar)


def _store_scores(kind: str, category: str, name: str, writer: Any, cols: list[Any], samples: list[str],
                  seconds: float, tally: _Tally, bar: Any) -> None:
    """Hand one metric's score columns of a batch to its writer and count its time and pairs."""
    tally.seconds[name] = tally.seconds.get(name, 0.0) + seconds
    tally.pairs[name] += len(samples) * len(cols)
    columns = [c.tolist() for c in cols]
    for j, sample in enumerate(samples):
        values = tuple(c[j] for c in columns)
        if any(map(math.isnan, values)):
            bar.write(f"warning: {name} gave {values} for {kind}/{category} sample {sample}; stored "
                      "as nan and excluded from statistics", file=sys.stderr)
        writer.add(sample, values)


def _problem(config: RunConfig, kind: str, category: str, problem: dict[str, str], tally: _Tally,
             bar: Any) -> None:
    """Apply the ``on_error`` policy to one sample that cannot be used.

    ``problem`` is an entry of a batch's ``"problems"`` (:func:`spips_bench.data.bapps.collate`).
    """
    sample, file, reason = problem["name"], problem["file"], problem["reason"]
    if config.on_error == "fail":
        error = ImageReadError if problem.get("error") == "ImageReadError" else DatasetError
        raise error(f"{file}: {reason.rstrip('.')} ({kind}/{category} sample {sample}). Or pass --on-error "
                    "skip to go on without this sample; everything scored so far is stored and a rerun "
                    "of the same command resumes.")
    tally.skipped.append({"kind": kind, "category": category, "sample": sample, "file": file,
                          "reason": reason})
    bar.write(f"skipped {kind}/{category} sample {sample}: {file}: {reason}", file=sys.stderr)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sorted_skips(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    """One entry per skipped (kind, category, sample), in a stable order."""
    unique = {(e["kind"], e["category"], e["sample"]): e for e in entries}
    return [unique[k] for k in sorted(unique)]


def run_benchmark(config: RunConfig, *, hook: FlushHook | None = None) -> RunResult:
    """Score ``config.metrics`` on BAPPS (or the demo set) into a run folder and write the reports.

    Raises:
        RunConfigError: the folder holds another configuration's results, or another run holds it.
        WeightsUnavailableError: with ``strict``, a metric whose weights are absent.
        DatasetError / ImageReadError: missing or broken dataset files, named in the message (with
            ``on_error="skip"`` only a missing or empty category folder; bad samples are skipped).
        StoreWriteError: the run folder cannot be written (disk full, no permission).
        ValueError: bad arguments (unknown category, device, kind).

    On any error the scores flushed so far stay in the store, ``run.json`` says ``"interrupted"`` or
    ``"failed"`` (with the error), and rerunning the same command resumes.
    """
    from spips_bench.settings import offline_mode

    with offline_mode(config.offline):  # --offline for this run only; the environment is untouched
        d = _Dist.from_env()
        try:
            return _run_benchmark(config, hook, d)
        finally:
            d.close()


def _run_benchmark(config: RunConfig, hook: FlushHook | None, d: _Dist) -> RunResult:
    offline = use_offline(config)
    device = _device(config.device, d)
    builtin = config.dataset in BUILTIN_DATASETS
    plan = resolve_plan(config) if builtin else []  # a plugin's categories are read from its root
    name, root = _dataset(config, d)
    if not builtin:
        plan = resolve_plan(config, root)
    # The plan against the disk, before any metric is built: what is absent is named (or refused) now.
    plan, absent = plan_on_disk(config, plan, root) if name == "bapps" else (plan, [])
    if absent and d.rank == 0:
        print(absent_notice(root, config.split, absent, len(plan)), file=sys.stderr)
    active, metric_info, metric_prints = build_metrics(config, device, offline)
    load = config.load_size or "native"
    out = Path(config.out or f"runs/{name}-{config.split}-{load}")
    store = ScoreStore(out, rank=d.rank, world_size=d.world)
    versions = package_versions()
    dataset_info, fingerprint = describe_run(config, name, root, device.type, versions, metric_prints,
                                             absent=absent)
    listing = data_listing(root, config.split, plan, name)  # names and sizes of the files to score
    fingerprint["data"] = listing_digests(listing)
    started, t0 = _now(), time.perf_counter()
    with _maybe_lock(store, d):
        previous: dict[str, Any] | None = None
        error = None
        if d.rank == 0:
            try:
                previous = store.read_run()
                if previous is None and not store.is_fresh():
                    raise RunConfigError(f"{out} exists, is not empty and holds no run.json; choose another "
                                         "--out.")
                if config.overwrite and previous is not None:
                    store.clear()
                    previous = None
                fingerprint["data"] = listing_digests(listing, stored_exclusions(previous))
                check_fingerprint(store, previous, fingerprint)
                store.remove_stale_temporaries()  # of a run killed while writing; the lock is ours
            except RunConfigError as exc:
                error = str(exc)
        error = d.share(error)
        if error is not None:
            raise RunConfigError(error)
        record = start_record(config, previous=previous, versions=versions, fingerprint=fingerprint,
                              dataset=dataset_info, metrics=metric_info, device=device, world_size=d.world,
                              started=started)
        record["skipped"] = list((previous or {}).get("skipped", []))  # until this run knows better
        # Absent categories of earlier invocations stay named until a run scores them.
        planned = {f"{k}/{c}" for k, c in plan}
        earlier_absent = set((previous or {}).get("dataset", {}).get("absent", [])) - planned
        record["dataset"]["absent"] = sorted(earlier_absent | set(absent))
        if d.rank == 0:
            store.write_run(record)
        d.barrier()
        conversions: dict[str, dict[str, int]] = {}
        seconds: dict[str, float] = {}
        metric_pairs: Counter[str] = Counter()
        patch_cache: Counter[str] = Counter()  # categories per patch-cache state, and the seconds it took
        cache_seconds = 0.0
        scored = 0
        pairs = 0
        # Skipped samples of the categories scored now are found again (their batches stay unfinished);
        # those of other categories, from earlier invocations into this folder, are kept.
        earlier = [e for e in (previous or {}).get("skipped", []) if (e["kind"], e["category"]) not in plan]
        found: list[dict[str, str]] = []
        try:
            for kind, category in plan:
                tally = _Tally(Counter(), seconds)
                try:
                    n_done, n_total = _score_category(config, store, d, device, root, kind, category, active,
                                                      tally, hook)
                finally:
                    found += tally.skipped
                record["categories"][f"{kind}/{category}"] = n_total
                scored += n_done
                metric_pairs.update(tally.pairs)
                patch_cache.update(tally.cache)
                cache_seconds += tally.cache_seconds
                pairs = sum(metric_pairs.values())
                if tally.conversions:
                    conversions[f"{kind}/{category}"] = dict(sorted(tally.conversions.items()))
        except BaseException as exc:
            if d.rank == 0:  # the scores flushed so far stay; a rerun of the same command resumes
                # SIGTERM/SIGHUP arrive as a KeyboardInterrupt that names its signal (spips-bench run).
                stop = ({"status": "interrupted", "interrupted": _now(),
                         "signal": getattr(exc, "signame", "SIGINT")} if isinstance(exc, KeyboardInterrupt)
                        else {"status": "failed", "failed": _now(), "error": str(exc)})
                record.update(stop, skipped=_sorted_skips(earlier + found))
                with contextlib.suppress(StoreWriteError):  # a full disk: the earlier run.json stays
                    store.write_run(record)
            raise
        scored, pairs, seconds = d.total(scored), d.total(pairs), d.total(seconds)
        per_metric = d.total(dict(metric_pairs))
        found = d.gather(found)
        d.barrier()
        reports: dict[str, Path] = {}
        if d.rank == 0:
            store.merge_parts()
            wall = time.perf_counter() - t0
            record.update(status="complete", finished=_now(), duration_s=round(wall, 3),
                          throughput={"items_scored": scored, "pair_scores": pairs,
                                      "items_per_second": round(scored / wall, 3),
                                      "pairs_per_second": round(pairs / wall, 3),
                                      "patch_cache": dict(sorted(patch_cache.items())),
                                      "patch_cache_seconds": round(cache_seconds, 3)},
                          metric_seconds={k: round(v, 3) for k, v in seconds.items()},
                          # pairs each metric scored per second of its own compute (decoding excluded)
                          metric_pairs_per_second={k: round(per_metric.get(k, 0) / v, 3)
                                                   for k, v in seconds.items() if v > 0},
                          conversions=conversions, nonfinite=nonfinite_samples(store),
                          skipped=_sorted_skips(earlier + found))
            record["categories"] = dict(sorted(record["categories"].items()))
            for a in active:  # what each metric holds in this folder, for `spips-bench tables --check`
                entry = record["metrics"][a.name]
                entry["scored"] = sorted({*entry.get("scored", []), *(f"{k}/{c}" for k, c in plan)})
            # The listing digests now leave out exactly the samples that stay skipped (a repaired one is in).
            excluded: dict[str, list[str]] = {}
            for e in record["skipped"]:
                excluded.setdefault(f"{e['kind']}/{e['category']}", []).append(e["sample"])
            record["fingerprint"]["data"].update(json_safe(listing_digests(listing, excluded)))
            store.write_run(record)
            reports = write_reports(out)
        d.barrier()
    return RunResult(out=out, record=record, reports=reports)
