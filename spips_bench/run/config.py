"""What a benchmark run is asked to do: :class:`RunConfig`, the judgment kinds and the bad-sample policies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spips_bench.errors import RunConfigError, did_you_mean

KINDS = ("2afc", "jnd")
#: The ``dataset`` values the runner resolves itself (BAPPS, the demo set and the choice between them);
#: every other name is a plugin of :mod:`spips_bench.data.registry`.
BUILTIN_DATASETS = ("auto", "bapps", "demo")
#: The policies for a sample that cannot be used; the first is the default.
ON_ERROR = ("fail", "skip")


def dataset_defaults(dataset: str) -> tuple[str, int | None]:
    """The split and load size a run of ``dataset`` takes when none is given: ``("val", 64)`` (the BAPPS
    protocol) for BAPPS, the demo set and paired-patch plugins; for a set of whole images judged on a
    quality scale (TID2013, KADID-10k, PIPAL) its first split (``"all"``, ``"train"``) at the native size,
    since those images are not 64-px patches. An unknown name gets BAPPS's (the runner then names it)."""
    if dataset in BUILTIN_DATASETS:
        return "val", 64
    from spips_bench.data.registry import get_dataset

    try:
        entry = get_dataset(dataset)
    except ValueError:
        return "val", 64
    splits = [s for k in entry.kind_names() for s in entry.kind_splits(k)]
    split = "val" if "val" in splits or not splits else splits[0]
    return split, (None if all(k.is_scale for k in entry.judgment_kinds()) else 64)


@dataclass
class RunConfig:
    """Everything ``spips-bench run`` needs; the CLI fills it from its arguments.

    Attributes:
        metrics: registry names, or ``["all"]`` for every registered metric.
        split: ``"val"`` or ``"train"``.
        dataset: ``"auto"`` (BAPPS under the root; the demo set only when no root was named and
            ``./datasets/bapps`` holds none), ``"bapps"``, ``"demo"`` or the name of a dataset plugin
            (:mod:`spips_bench.data.registry`). A root holding a demo set is always labelled as the demo
            set (synthetic judgments) under ``auto``, ``bapps`` and ``demo``.
        root: BAPPS root (holding ``2afc/``, ``jnd/``); None: ``$SPIPS_BENCH_BAPPS`` or ``./datasets/bapps``.
            A named root that holds no BAPPS is an error. With ``dataset="demo"`` an explicit root is
            where the demo set is generated.
        categories: category names (applied to each kind that has them); None: all of the split. A
            category (or kind) named here and absent from the root is an error; other absent
            categories are named in a notice, in ``run.json`` and in the tables, and skipped.
        kinds: subset of ``("2afc", "jnd")``; None: both on val, 2AFC on train.
        out: run folder; None: ``./runs/<dataset>-<split>-<load size>``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        batch_size: samples per batch (also the unit of resuming and sharding).
        workers: DataLoader worker processes (0 decodes in the main process).
        amp: autocast (bfloat16 on CPU, float16 on CUDA).
        load_size: side in px of the bilinear resize (BAPPS protocol: 64); None keeps the stored size.
        strict: a metric that cannot run (missing weights, a load size below its minimum) or a category
            absent from the root is an error instead of a skipped row.
        bootstrap: bootstrap resamples for the intervals in ``summary.csv``.
        seed: bootstrap seed.
        checkpoint: trained parameters passed as ``checkpoint=`` to every metric that accepts it (and has
            none in ``checkpoints``).
        checkpoints: trained parameters per metric: ``{metric name as requested: file}``. A name is matched
            as the registry matches it (aliases, case, ``_``/``-``) and must be among ``metrics`` and take
            a checkpoint; each file must exist (see :func:`spips_bench.run.config.metric_checkpoints`).
        offline: never download; metrics whose weights are absent are skipped.
        overwrite: discard an existing run folder of another configuration instead of refusing.
        flush_every: batches between writes of the store (an interruption loses at most these).
        progress: show a progress bar per category on stderr.
        on_error: what a sample that cannot be used does: ``"fail"`` stops the run naming the file,
            ``"skip"`` leaves the sample out and lists it in ``run.json`` (see the module docstring).
        cache: read the patches through the decoded-patch cache (:mod:`spips_bench.data.cache`): each
            category is decoded once and later runs (and ``train``) read the decoded patches; the scores
            are the same either way. False (``--no-cache``) decodes every file and writes no cache.
    """

    metrics: list[str]
    split: str = "val"
    dataset: str = "auto"
    root: Path | None = None
    categories: list[str] | None = None
    kinds: list[str] | None = None
    out: Path | None = None
    device: str = "auto"
    batch_size: int = 50
    workers: int = 0
    amp: bool = False
    load_size: int | None = 64
    strict: bool = False
    bootstrap: int = 1000
    seed: int = 0
    checkpoint: Path | None = None
    checkpoints: dict[str, Path] = field(default_factory=dict)
    offline: bool = False
    overwrite: bool = False
    flush_every: int = 20
    progress: bool = True
    on_error: str = "fail"
    cache: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "flush_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}.")
        if self.workers < 0 or self.bootstrap < 0:
            raise ValueError(f"workers and bootstrap must be >= 0, got {self.workers}, {self.bootstrap}.")
        if self.dataset != "auto":
            from spips_bench.data.registry import get_dataset

            self.dataset = get_dataset(self.dataset).name  # unknown names fail here, listing the known ones
        if not self.metrics:
            raise ValueError("no metrics requested; pass metric names or 'all' (see `spips-bench list`).")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}.")
        if self.checkpoints:
            self.checkpoints = {str(k): Path(v) for k, v in self.checkpoints.items()}
            metric_checkpoints(self)  # a bad name or a missing file fails here, before any data is read


def metric_names(requested: list[str]) -> list[str]:
    """Registry names of ``requested`` (aliases resolved, duplicates dropped); ``["all"]``: every metric."""
    from spips_bench.registry import get_spec, list_metrics

    if [n.strip().lower() for n in requested] == ["all"]:
        return list_metrics()
    names: list[str] = []
    for n in requested:
        spec = get_spec(n)  # unknown names fail here with "did you mean"
        if spec.name not in names:
            names.append(spec.name)
    return names


def metric_checkpoints(config: RunConfig) -> dict[str, Path]:
    """The checkpoint of each metric of the run that gets one: ``{registry name: file}``.

    A name of ``config.checkpoints`` is resolved as the registry resolves it (aliases, case, ``_``/``-``);
    ``config.checkpoint`` goes to every other metric that takes a checkpoint.

    Raises:
        RunConfigError: a name that is not among the requested metrics (with the closest one), that
            names a metric taking no checkpoint, or that is given twice under two spellings; a file that
            does not exist; a bare checkpoint left without a metric to take it.
    """
    from spips_bench.errors import UnknownMetricError
    from spips_bench.registry import accepts_option, get_spec

    names = metric_names(config.metrics)
    named: dict[str, Path] = {}
    spelled: dict[str, str] = {}
    for given, path in config.checkpoints.items():
        flag = f"--checkpoint {given}={path}"
        try:
            name = get_spec(given).name
        except UnknownMetricError:
            name = None
        if name is None or name not in names:
            raise RunConfigError(f"{flag}: {given!r} is not among the metrics of this run ({', '.join(names)})."
                                 f"{did_you_mean(given, names)} Add it to --metrics or fix the name.")
        if name in named:
            raise RunConfigError(f"{flag}: metric {name!r} already has a checkpoint ({named[name]}, given as "
                                 f"{spelled[name]!r}); give one checkpoint per metric.")
        if not accepts_option(get_spec(name), "checkpoint"):
            takers = [n for n in names if accepts_option(get_spec(n), "checkpoint")]
            which = f"of this run only {', '.join(takers)} take one" if takers else "no metric of this run takes one"
            raise RunConfigError(f"{flag}: metric {name!r} takes no checkpoint ({which}); drop it.")
        if not Path(path).is_file():
            raise RunConfigError(f"{flag}: no such file {path}; pass the checkpoint `spips-bench train` wrote "
                                 "(its final.safetensors).")
        named[name] = Path(path)
        spelled[name] = given
    out: dict[str, Path] = {}
    for name in names:
        if name in named:
            out[name] = named[name]
        elif config.checkpoint is not None and accepts_option(get_spec(name), "checkpoint"):
            out[name] = Path(config.checkpoint)
    if config.checkpoint is not None and named and set(out) == set(named):
        raise RunConfigError(f"--checkpoint {config.checkpoint} is left for no metric: every metric of this run "
                             "that takes a checkpoint has its own NAME=PATH; drop the bare one.")
    return out
