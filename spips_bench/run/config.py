"""What a benchmark run is asked to do: :class:`RunConfig`, the judgment kinds and the bad-sample policies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KINDS = ("2afc", "jnd")
#: The ``dataset`` values the runner resolves itself (BAPPS, the demo set and the choice between them);
#: every other name is a plugin of :mod:`spips_bench.data.registry`.
BUILTIN_DATASETS = ("auto", "bapps", "demo")
#: The policies for a sample that cannot be used; the first is the default.
ON_ERROR = ("fail", "skip")


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
        checkpoint: trained parameters passed as ``checkpoint=`` to every metric that accepts it.
        offline: never download; metrics whose weights are absent are skipped.
        overwrite: discard an existing run folder of another configuration instead of refusing.
        flush_every: batches between writes of the store (an interruption loses at most these).
        progress: show a progress bar per category on stderr.
        on_error: what a sample that cannot be used does: ``"fail"`` stops the run naming the file,
            ``"skip"`` leaves the sample out and lists it in ``run.json`` (see the module docstring).
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
    offline: bool = False
    overwrite: bool = False
    flush_every: int = 20
    progress: bool = True
    on_error: str = "fail"

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
