"""What every part of the benchmark shares: its configuration and result types, timing, memory and inputs.

:mod:`spips_bench.perf.bench` runs the measurements of :mod:`spips_bench.perf.metrics` and
:mod:`spips_bench.perf.system`; :mod:`spips_bench.perf.report` renders their result.
"""

from __future__ import annotations

import functools
import operator
import os
import statistics
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

#: The data file that names what the benchmark compares: default metrics, peers, references, targets.
PLAN_FILE = "perf/targets.toml"
_THRESHOLD_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}
_TARGET_CHECKS = ("peer-ratio", "peer-diff", "reference-diff", "time-ratio", "system", "run-case", "projection")


@dataclass(frozen=True)
class Target:
    """One performance target of :data:`PLAN_FILE` (its comments define each field)."""

    check: str
    label: str
    threshold: str
    detail: str = ""
    metric: str = ""
    peer: str = ""
    baseline: str = ""
    key: str = ""
    size: str = "small"
    unit: str = ""

    def met(self, value: float) -> bool:
        """Whether ``value`` meets :attr:`threshold` (``">= 3x"``, ``"<= 1e-6"``)."""
        op, _, number = self.threshold.partition(" ")
        return _THRESHOLD_OPS[op](value, float(number.removesuffix("x")))


@dataclass(frozen=True)
class BenchPlan:
    """The contents of :data:`PLAN_FILE`: which metric is compared with what, and the targets.

    Attributes:
        default_metrics: the metrics of ``--metrics default``.
        packages: the reference packages ``--peers`` may name.
        peers: metric name -> labels of its peers (:data:`spips_bench.perf.peers.PEERS`).
        references: metric name -> (function of :mod:`spips_bench.perf.peers`, the zoo metric's options).
        run_metric: the metric of the ``run`` end-to-end measurement.
        targets: the targets, in report order.
        bandwidth_metrics: the metrics whose share of the memory bandwidth is reported (large size).
        shared_trunk: metrics on one trunk, whose ``run`` together is compared with each alone.
        cache_metric: the cheap metric of the decoded-patch cache case (cold, warm, ``--no-cache``).
    """

    default_metrics: tuple[str, ...]
    packages: tuple[str, ...]
    peers: dict[str, tuple[str, ...]]
    references: dict[str, tuple[str, dict[str, Any]]]
    run_metric: str
    targets: tuple[Target, ...]
    bandwidth_metrics: tuple[str, ...] = ()
    shared_trunk: tuple[str, ...] = ()
    cache_metric: str = ""

    @property
    def run_peer(self) -> str:
        """The peer that the ``run`` end-to-end measurement is compared with: the first of ``run_metric``.

        Raises:
            RuntimeError: the plan gives that metric no peer.
        """
        labels = self.peers.get(self.run_metric, ())
        if not labels:
            raise RuntimeError(f"spips_bench/{PLAN_FILE}: run_metric {self.run_metric!r} has no peer; "
                               "reinstall spips-bench.")
        return labels[0]


@functools.lru_cache(maxsize=1)
def bench_plan() -> BenchPlan:
    """Read :data:`PLAN_FILE` (once).

    Raises:
        ValueError: the file has an unknown key, check or threshold (a broken install: reinstall).
    """
    source = resources.files("spips_bench").joinpath(PLAN_FILE)
    data = tomllib.loads(source.read_text(encoding="utf-8"))
    where = f"spips_bench/{PLAN_FILE}"
    unknown = set(data) - {"default_metrics", "packages", "metrics", "system", "bandwidth", "run_cases", "targets"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; reinstall spips-bench.")
    peers: dict[str, tuple[str, ...]] = {}
    references: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, table in data.get("metrics", {}).items():
        extra = set(table) - {"peers", "reference"}
        if extra:
            raise ValueError(f"{where}: metrics.{name} has unknown key(s) {sorted(extra)}; reinstall spips-bench.")
        peers[name] = tuple(table.get("peers", ()))
        if "reference" in table:
            references[name] = (table["reference"]["function"], dict(table["reference"].get("options", {})))
    targets = []
    for i, entry in enumerate(data.get("targets", []), start=1):
        try:
            target = Target(**entry)
        except TypeError as exc:
            raise ValueError(f"{where}: target {i}: {exc}; reinstall spips-bench.") from None
        op, _, number = target.threshold.partition(" ")
        try:
            float(number.removesuffix("x"))
        except ValueError:
            op = ""
        if target.check not in _TARGET_CHECKS or op not in _THRESHOLD_OPS:
            raise ValueError(f"{where}: target {i} ({target.label!r}): check {target.check!r} must be one of "
                             f"{', '.join(_TARGET_CHECKS)} and threshold {target.threshold!r} look like '>= 3x'.")
        targets.append(target)
    cases = data.get("run_cases", {})
    extra = set(cases) - {"shared_trunk", "cache_metric"}
    if extra:
        raise ValueError(f"{where}: run_cases has unknown key(s) {sorted(extra)}; reinstall spips-bench.")
    return BenchPlan(tuple(data.get("default_metrics", ())), tuple(data.get("packages", ())), peers, references,
                     str(data.get("system", {}).get("run_metric", "")), tuple(targets),
                     bandwidth_metrics=tuple(data.get("bandwidth", {}).get("metrics", ())),
                     shared_trunk=tuple(cases.get("shared_trunk", ())),
                     cache_metric=str(cases.get("cache_metric", "")))


@dataclass
class BenchConfig:
    """Options of ``spips-bench bench`` (see ``spips-bench bench --help``).

    Attributes:
        metrics: registry names; ``["default"]`` is :attr:`BenchPlan.default_metrics`, ``["all"]`` every
            built-in.
        sizes: image sides in pixels for the metrics without a CNN trunk.
        deep_sizes: image sides for the metrics that load a trunk (default 64, the BAPPS size: at 256 px a
            VGG16 trunk costs about 20 GFLOP per image).
        batch_size: pairs (or triplets) per call.
        device: ``"cpu"`` or ``"cuda"``.
        threads: ``torch.set_num_threads`` for every measurement (and the ``run`` subprocesses).
        repeats: timed calls per measurement, after one warm-up call; the median is reported.
        peers: reference packages to compare with: a subset of :attr:`BenchPlan.packages` (default all).
        out: folder of the report.
        quick: a small smoke run (one size, tiny sets); numbers are not meaningful.
        run_samples: triplets of the small ``run`` set; the large one has ten times as many.
        run_workers: DataLoader workers of the ``run`` subprocesses.
        system: run the system section (GFLOP/s, ``run`` end to end, memory).
        command: the command line, written at the top of the report.
    """

    metrics: list[str]
    sizes: list[int] = field(default_factory=lambda: [64, 256])
    deep_sizes: list[int] = field(default_factory=lambda: [64])
    batch_size: int = 16
    device: str = "cpu"
    threads: int = 2
    repeats: int = 3
    peers: list[str] = field(default_factory=lambda: list(bench_plan().packages))
    out: Path = Path("results/bench")
    quick: bool = False
    run_samples: int = 100
    run_workers: int = 0
    system: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        for name in ("batch_size", "threads", "repeats", "run_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, "
                                 f"got {getattr(self, name)!r}.")
        if self.run_workers < 0:
            raise ValueError(f"--run-workers must be >= 0, got {self.run_workers!r}.")
        for opt, sizes in (("--sizes", self.sizes), ("--deep-sizes", self.deep_sizes)):
            if not sizes or any(s < 8 for s in sizes):
                raise ValueError(f"{opt} must list image sides of at least 8 px, got {sizes!r}.")
        packages = bench_plan().packages
        unknown = set(self.peers) - set(packages)
        if unknown:
            raise ValueError(f"--peers: unknown package(s) {sorted(unknown)}; choose among {', '.join(packages)} "
                             "or 'none'.")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}.")


@dataclass
class Timing:
    """One measurement: median seconds per call, every repeat, peak memory growth (MiB)."""

    median_s: float
    runs_s: list[float]
    peak_mib: float

    def rate(self, items: int) -> float:
        """Items per second at ``items`` per call."""
        return items / self.median_s if self.median_s > 0 else float("inf")


@dataclass
class Row:
    """One line of the report: a throughput of ours, optionally against a peer.

    ``ratio`` is ours / peer throughput (above 1: ours is faster).
    """

    section: str
    case: str
    size: int
    batch: int
    unit: str
    ours_per_s: float
    peer: str = ""
    peer_per_s: float = float("nan")
    max_abs_diff: float = float("nan")
    ours_peak_mib: float = float("nan")
    peer_peak_mib: float = float("nan")
    note: str = ""

    @property
    def ratio(self) -> float:
        if not self.peer or not self.peer_per_s > 0:
            return float("nan")
        return self.ours_per_s / self.peer_per_s


@dataclass
class BenchResult:
    """Everything measured; :mod:`spips_bench.perf.report` renders it."""

    config: BenchConfig
    rows: list[Row] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    system: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# -- measuring ---------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return -1
    return pages * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: str) -> Iterator[list[float]]:
    """Yield a one-element list that holds, after the block, the peak memory growth in MiB (nan if the
    platform offers no way to read it)."""
    box = [float("nan")]
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield box
        torch.cuda.synchronize()
        box[0] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return
    base = _rss_bytes()
    if base < 0:
        yield box
        return
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            stop.wait(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        box[0] = (peak[0] - base) / 2**20


def measure(fn: Callable[[], Any], *, repeats: int, device: str, warmup: bool = True) -> Timing:
    """Time ``fn()`` under ``torch.inference_mode``: one warm-up call, then ``repeats`` timed calls.

    The peak memory is read during the warm-up call (``nan`` when ``warmup`` is False because the caller
    has just run ``fn``): the sampling thread wakes every millisecond, which on a machine whose cores all
    run intra-op threads would also slow the timed calls.
    """
    cuda = device == "cuda"
    peak = [float("nan")]
    with torch.inference_mode():
        if warmup:
            with peak_memory(device) as peak:
                fn()
        if cuda:
            torch.cuda.synchronize()
        runs: list[float] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - t0)
    return Timing(statistics.median(runs), runs, peak[0])


def profile_table(fn: Callable[[], Any], *, device: str, rows: int = 8) -> str:
    """``torch.profiler`` table of the ``rows`` operators with the most self time over one call."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.inference_mode():
        fn()
        with profile(activities=activities) as prof:
            fn()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return str(prof.key_averages().table(sort_by=key, row_limit=rows))


# -- inputs ------------------------------------------------------------------------------------------


def make_images(size: int, n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ref, p0, p1)``, each ``(n, 3, size, size)`` float32 in [0, 1]: crops of photographs shipped with
    scikit-image, ``p0`` with Gaussian noise, ``p1`` blurred plus weaker noise, strengths varying."""
    import numpy as np
    from skimage import data

    gen = torch.Generator().manual_seed(seed)
    sources = [torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
               for img in (data.astronaut(), data.coffee(), data.chelsea())]
    refs = []
    for i in range(n):
        src = sources[i % len(sources)]
        side = min(size, src.shape[1], src.shape[2])
        top = int(torch.randint(0, src.shape[1] - side + 1, (1,), generator=gen))
        left = int(torch.randint(0, src.shape[2] - side + 1, (1,), generator=gen))
        crop = src[:, top:top + side, left:left + side].unsqueeze(0)
        if side != size:
            crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear",
                                                   align_corners=False, antialias=True)
        refs.append(crop[0])
    ref = torch.stack(refs).clamp(0, 1)
    sigma = torch.rand(n, 1, 1, 1, generator=gen) * 0.1 + 0.01
    p0 = (ref + sigma * torch.randn(ref.shape, generator=gen)).clamp(0, 1)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    blur = torch.nn.functional.conv2d(torch.nn.functional.pad(ref, (2, 2, 2, 2), mode="reflect"),
                                      (k[:, None] * k[None, :]).expand(3, 1, 5, 5).contiguous(), groups=3)
    p1 = (blur + 0.3 * sigma * torch.randn(ref.shape, generator=gen)).clamp(0, 1)
    return ref.contiguous(), p0.contiguous(), p1.contiguous()


# -- the benchmark -----------------------------------------------------------------------------------


def resolve_metrics(requested: list[str]) -> list[str]:
    """Expand ``default``/``all`` and check every name against the registry (unknown names fail)."""
    from spips_bench.registry import get_spec, load_cards

    names: list[str] = []
    for item in requested:
        if item == "default":
            names.extend(bench_plan().default_metrics)
        elif item == "all":
            names.extend(spec.name for spec in load_cards())
        else:
            names.append(get_spec(item).name)
    return list(dict.fromkeys(names))


def create_for_bench(name: str, **options: Any) -> tuple[torch.nn.Module, str]:
    """Create metric ``name`` offline; a trunk whose pretrained weights are absent is left random (the
    same architecture and operations, so the same time), and the returned note says so."""
    from spips_bench.registry import accepts_option, create_metric, get_spec

    spec = get_spec(name)
    note = ""
    if spec.missing_weights():
        if not accepts_option(spec, "pretrained"):
            from spips_bench.errors import WeightsUnavailableError

            raise WeightsUnavailableError(f"{name}: weights {spec.missing_weights()} are not available "
                                          "offline; fetch them with `spips-bench weights`.")
        options["pretrained"] = False
        note = f"random trunk ({', '.join(spec.missing_weights())} absent; same operations)"
    if accepts_option(spec, "offline"):
        options["offline"] = True
    return create_metric(name, **options).eval(), note
