"""A run's setup (plan, metrics), its record (``run.json``) and the reports derived from its store.

``run.json`` says what produced the scores beside it: versions, arguments, device, dataset, weight and
checkpoint SHA-256, per-metric status, timings. Its ``fingerprint`` holds exactly the settings that
change a stored number; a later run into the same folder must match it (see
:func:`check_fingerprint`). :func:`write_reports` turns the store into ``summary.csv``, ``tables.md``
and ``tables.tex`` without computing any metric, so ``spips-bench tables`` can rebuild them anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spips_bench.errors import DatasetError, RunConfigError, WeightsUnavailableError
from spips_bench.store import ScoreStore, atomic_write_text
from spips_bench.weights import sha256_file

if TYPE_CHECKING:
    from spips_bench.evaluate import RunConfig

RUN_FORMAT = "spips-bench-run/2"
KINDS = ("2afc", "jnd")
#: The per-metric settings that change its scores; a run folder refuses a metric whose settings differ.
FINGERPRINT_KEYS = ("target", "options", "weights", "checkpoint_sha256", "trained", "packages")
#: Report files and the ``--format`` names that select them.
REPORT_FILES = {"md": "tables.md", "tex": "tables.tex"}


#: Distributions whose code takes part in every score: decoding and resizing (Pillow), the tensors
#: (torch, numpy), the filters (scipy), the reference implementations (piq, torchvision trunks). Each is
#: in the fingerprint; the packages that ship a metric's weights are in that metric's fingerprint.
SCORING_PACKAGES = ("spips-bench", "torch", "torchvision", "numpy", "scipy", "piq", "pillow")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages whose behaviour can change a score."""
    return {"python": platform.python_version(), **{dist: _version(dist) for dist in SCORING_PACKAGES}}


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    """Import package -> distributions (a scan of every installed distribution: done once)."""
    return metadata.packages_distributions()


def weight_packages(weights: Sequence[str]) -> dict[str, str]:
    """``{distribution: version}`` of the installed packages that ship the named weight files."""
    from spips_bench.weights import WEIGHTS

    dists = _distributions()
    out: dict[str, str] = {}
    for name in weights:
        wf = WEIGHTS.get(name)
        if wf is None or wf.package is None:
            continue
        for dist in dists.get(wf.package[0], [wf.package[0]]):
            out[dist] = _version(dist)
    return dict(sorted(out.items()))


#: Package files whose code can change a stored score (the reports are rebuilt from the store anyway):
#: the metrics and their cards, image decoding, the readers, and the runner's scoring path, store and
#: registry.
SCORING_CODE = ("metric.py", "validation.py", "imageio.py", "weights.py", "data/bapps.py", "zoo", "cards",
                "evaluate.py", "store.py", "registry.py")


def scoring_code_files() -> list[Path]:
    """The files of :data:`SCORING_CODE` (Python sources and metric cards), in hashing order."""
    root = Path(__file__).parent
    files: list[Path] = []
    for entry in SCORING_CODE:
        path = root / entry
        found = sorted(f for f in path.rglob("*") if f.suffix in (".py", ".toml")) if path.is_dir() else [path]
        files += [f for f in found if f.is_file()]
    return files


def scoring_code_sha256() -> str:
    """One SHA-256 over the package's scoring code, so that scores of edited code are never mixed.

    A released version changes with its code; an editable install can change without a new version,
    and this hash notices it.
    """
    root = Path(__file__).parent
    h = hashlib.sha256()
    for f in scoring_code_files():
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def weight_hashes(names: Sequence[str]) -> dict[str, str]:
    """The SHA-256 every copy of each named weight file must have (files are verified before loading)."""
    if not names:
        return {}
    from spips_bench.weights import WEIGHTS

    return {n: WEIGHTS[n].sha256 if n in WEIGHTS else "unknown" for n in names}


def check_fingerprint(store: ScoreStore, previous: Mapping[str, Any] | None,
                      current: Mapping[str, Any]) -> None:
    """Refuse to mix results of different configurations in one run folder.

    The global settings (dataset, its resolved root, split, load size, device type, AMP, package
    versions, scoring code) must be equal; so must the settings of every metric stored by both runs,
    and the listing digest (names and sizes) of every category an earlier run went through to its end.
    Adding metrics or categories is allowed.

    Raises:
        RunConfigError: naming the differing setting, its stored and new value, and the way out; or the
            folder was written in another run format.
    """
    if previous is None:
        return
    hint = f"Use another --out, or pass --overwrite to discard the results in {store.root}."
    if previous.get("format") != RUN_FORMAT:
        raise RunConfigError(
            f"{store.run_file} was written in run format {previous.get('format')!r}; this spips-bench writes "
            f"{RUN_FORMAT!r}, whose fingerprint also covers the data root and files and every package that "
            f"decides a score, so the stored scores cannot be checked against this run. Rerun with "
            f"--overwrite to discard the results in {store.root}, or choose another --out."
        )
    old_fp = previous.get("fingerprint", {})
    gone_through = previous.get("categories", {})  # a category a run went through to its end
    for key, new in current.get("data", {}).items():
        old = old_fp.get("data", {}).get(key)
        # A category no run finished yet may change: the file that stopped a run is repaired, then resumed.
        if old is not None and key in gone_through and old.get("sha256") != new.get("sha256"):
            raise RunConfigError(
                f"{store.run_file}: the files of {key} changed since they were scored ({old.get('files')} "
                f"files, listing digest {str(old.get('sha256'))[:12]} then; {new.get('files')} files, "
                f"{str(new.get('sha256'))[:12]} now; names and sizes are compared); scores of different "
                f"data cannot share a run folder. {hint}"
            )
    for key, new in current["global"].items():
        old = old_fp.get("global", {}).get(key)
        if old != new:
            raise RunConfigError(
                f"{store.run_file} was written with {key} = {old!r}, this run has {key} = {new!r}; "
                f"scores of different configurations cannot share a run folder. {hint}"
            )
    for name, new in current["metrics"].items():
        old = old_fp.get("metrics", {}).get(name)
        if old is not None and old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise RunConfigError(
                f"{store.run_file}: metric {name!r} was scored with other settings ({', '.join(diff)}: "
                f"{[old.get(k) for k in diff]!r} then, {[new.get(k) for k in diff]!r} now). {hint}"
            )


# -- run setup: what to score and with which metrics -------------------------------------------------


@dataclass
class ActiveMetric:
    """A metric ready to score: its registry name, the module on its device, and its direction."""

    name: str
    metric: Any
    higher_is_better: bool


def use_offline(config: RunConfig) -> bool:
    """Whether downloads are off for this run: ``config.offline`` or :func:`spips_bench.settings.offline`.

    The runner holds :func:`spips_bench.settings.offline_mode` for ``--offline`` while it runs, so every
    weight lookup sees the same answer without the environment being written.
    """
    from spips_bench.settings import offline

    return bool(config.offline) or offline()


def resolve_plan(config: RunConfig) -> list[tuple[str, str]]:
    """``(kind, category)`` pairs to score, validated against the split."""
    from spips_bench.data.bapps import JND_SPLITS, resolve_categories

    kinds = config.kinds or [k for k in KINDS if k == "2afc" or config.split in JND_SPLITS]
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown kind {k!r} in --kinds; use 2afc and/or jnd.")
        if k == "jnd" and config.split not in JND_SPLITS:
            raise ValueError(f"BAPPS has JND judgments for {', '.join(JND_SPLITS)} only, not "
                             f"{config.split!r}; drop jnd from --kinds or use --split val.")
    plan: list[tuple[str, str]] = []
    if not config.categories:
        return [(k, c) for k in kinds for c in resolve_categories(k, config.split, None)]
    for k in kinds:
        known = resolve_categories(k, config.split, None)
        plan += [(k, c) for c in config.categories if c in known]
    for c in config.categories:
        if not any(c == pc for _, pc in plan):
            resolve_categories(kinds[0], config.split, [c])  # raises with the valid names and a suggestion
    return plan


def download_hint(root: Path, split: str) -> str:
    """The command that fetches what ``spips-bench run --split split`` reads into ``root``."""
    what = " (2AFC val and JND, what `run --split val` reads)" if split == "val" else ""
    return f"`spips-bench download bapps --split {split} --root {root}`{what}"


def plan_on_disk(config: RunConfig, plan: Sequence[tuple[str, str]], root: Path,
                 ) -> tuple[list[tuple[str, str]], list[str]]:
    """Split ``plan`` into the ``(kind, category)`` pairs whose folders exist under ``root`` and the
    ``"kind/category"`` names of those that do not; decide whether an absence is allowed.

    An absence is allowed (the caller names it in a notice, in ``run.json`` and in the tables) unless
    ``--strict`` is on, or the category or kind was asked for by name (``--categories``, ``--kinds``)
    and none of it is there; with both given by name every pair counts as asked for.

    Raises:
        DatasetError: an absence that is not allowed, or nothing of the plan present; the message
            names the folders and the download command.
    """
    from spips_bench.data.bapps import present_categories

    on_disk = present_categories(root, config.split)
    present = [(k, c) for k, c in plan if c in on_disk.get(k, [])]
    absent = [f"{k}/{c}" for k, c in plan if (k, c) not in present]
    if not absent:
        return present, []
    fix = f"Download it with {download_hint(root, config.split)}"
    where = f"{root}/<kind>/{config.split}/<category>"

    def refuse(what: str, why: str, way_out: str) -> DatasetError:
        return DatasetError(f"{root}: BAPPS {config.split} lacks {what} ({why}; looked for {where}). {fix}, "
                            f"or {way_out}.")

    by_name = [f"{k}/{c}" for k, c in plan if f"{k}/{c}" in absent and config.categories and config.kinds]
    for c in config.categories or []:
        if not any(pc == c for _, pc in present):
            by_name += [f"{k}/{pc}" for k, pc in plan if pc == c]
    for k in config.kinds or []:
        if not any(pk == k for pk, _ in present):
            by_name += [f"{pk}/{c}" for pk, c in plan if pk == k]
    if by_name:
        asked = ", ".join(dict.fromkeys(by_name))
        raise refuse(asked, "asked for by --categories/--kinds", "leave it out of --categories/--kinds")
    if not present:
        raise refuse(", ".join(absent), "nothing of the plan is there",
                     "point --root at the folder that holds 2afc/ and jnd/")
    if config.strict:
        raise refuse(", ".join(absent), "--strict makes an absent category an error",
                     "drop --strict to score the categories present and footnote the others")
    return present, absent


def absent_notice(root: Path, split: str, absent: Sequence[str], scored: int) -> str:
    """The one line that says what of the plan the data lacks and how to get it."""
    return (f"NOTICE: {root} holds part of BAPPS {split}: {', '.join(absent)} absent and not scored; "
            f"scoring the {scored} categories present. Get the rest with {download_hint(root, split)}; "
            "--strict makes an absent category an error.")


def data_listing(root: Path, split: str, pairs: Sequence[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """The file listing (names and sizes) of each ``(kind, category)`` of ``pairs``, keyed ``"kind/category"``."""
    from spips_bench.data.bapps import category_listing

    return {f"{k}/{c}": category_listing(root / k / split / c) for k, c in pairs}


def listing_digests(listing: Mapping[str, list[tuple[str, str]]],
                    excluded: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict[str, Any]]:
    """One SHA-256 per category over its files' names and sizes, leaving out the samples ``excluded``
    (those skipped under ``--on-error skip``: they have no stored score, and a repaired file of one
    must not make the folder refuse the rerun that scores it)."""
    out: dict[str, dict[str, Any]] = {}
    for key, entries in listing.items():
        skip = set((excluded or {}).get(key, ()))
        h = hashlib.sha256()
        n = 0
        for stem, line in entries:
            if stem not in skip:
                h.update(line.encode("utf-8", "surrogateescape") + b"\n")
                n += 1
        out[key] = {"files": n, "sha256": h.hexdigest(), "excluded": sorted(skip)}
    return out


def stored_exclusions(previous: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The samples each category's stored listing digest leaves out (see :func:`listing_digests`)."""
    data = (previous or {}).get("fingerprint", {}).get("data", {})
    return {key: list(entry.get("excluded", [])) for key, entry in data.items()}


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


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (paths and other objects as strings, keys sorted)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _too_small(config: RunConfig, name: str, min_size: int, explicit: bool) -> str | None:
    """Why metric ``name`` cannot run at the fixed ``config.load_size``, as a table note (None: it can).

    Raises:
        RunConfigError: with ``--strict``, or when the metric was named in ``--metrics`` (not ``all``).
    """
    size = config.load_size
    if size is None or min_size <= size:
        return None  # at the native size each sample is checked against the minimum when it is read
    if config.strict or explicit:
        raise RunConfigError(
            f"metric {name!r} needs patches of at least {min_size}x{min_size} px, and --load-size {size} gives "
            f"{size}x{size}: pass --load-size {min_size} or more (BAPPS protocol: 64), or drop {name!r} from "
            "--metrics. Nothing was scored."
            + ("" if config.strict else " Under --metrics all it would be skipped and footnoted."))
    # No "--" in a table note: LaTeX would typeset the flag's dashes as one en dash.
    return (f"needs patches of at least {min_size}x{min_size} px, the load size is {size} px: use a load size "
            f"of {min_size} px or more (BAPPS protocol: 64)")


def _offline_details(missing: Sequence[str]) -> str:
    """What the weights module says about each absent weight file offline: its URL, SHA-256 and the path
    to put it at."""
    from spips_bench.weights import resolve

    details = []
    for name in missing:
        try:
            resolve(name, offline=True)
        except WeightsUnavailableError as exc:
            details.append(str(exc))
    return " ".join(details)


def build_metrics(config: RunConfig, device: Any, offline: bool
                   ) -> tuple[list[ActiveMetric], dict[str, dict[str, Any]], dict[str, Any]]:
    """Create every runnable metric; returns them, their run.json entries and their fingerprints."""
    from spips_bench.registry import accepts_option, create_metric, get_spec

    names = metric_names(config.metrics)
    explicit = [n.strip().lower() for n in config.metrics] != ["all"]
    ckpt_hash = sha256_file(config.checkpoint) if config.checkpoint else None
    active: list[ActiveMetric] = []
    info: dict[str, dict[str, Any]] = {}
    prints: dict[str, Any] = {}
    takers = []
    for name in names:
        spec = get_spec(name)
        entry: dict[str, Any] = {"higher_is_better": spec.higher_is_better, "trained": spec.trained,
                                 "target": spec.target, "options": json_safe(spec.options),
                                 "weights": weight_hashes(spec.weights), "ablation_of": spec.ablation_of,
                                 "packages": weight_packages(spec.weights)}
        options: dict[str, Any] = {}
        if config.checkpoint is not None and accepts_option(spec, "checkpoint"):
            options["checkpoint"] = str(config.checkpoint)
            entry["checkpoint_sha256"] = ckpt_hash
            entry["trained"] = True
            takers.append(name)
        small = _too_small(config, name, int(spec.min_size), explicit)
        if small is not None:  # known from the load size alone: nothing is created, no data is read
            info[name] = {**entry, "status": "skipped", "reason": small, "note": small}
            continue
        missing = spec.missing_weights()
        # `note`: one short clause with the fix (tables, grouped); `reason`: the details (run.json, stderr).
        note = spec.unavailable_reason() if missing and offline else None
        reason = _offline_details(missing) or note if note else None
        metric: Any = None
        if reason is None:
            try:
                metric = create_metric(name, **options)
            except WeightsUnavailableError as exc:
                reason = f"weights unavailable: {exc}"
                note = spec.unavailable_reason() or "weights unavailable"
            except ImportError as exc:  # an optional dependency of this one metric is not installed
                reason = f"needs a package that is not installed ({exc})"
                note = spec.unavailable_reason() or (
                    f"needs package {exc.name}, not installed: `pip install {exc.name}`" if exc.name
                    else "needs a package that is not installed")
        if reason is not None:
            if config.strict:
                raise WeightsUnavailableError(f"metric {name!r} cannot run: {reason}. Without --strict it "
                                              "would be skipped and footnoted.")
            info[name] = {**entry, "status": "skipped", "reason": reason, "note": note}
            continue
        small = _too_small(config, name, int(getattr(metric, "min_size", spec.min_size)), explicit)
        if small is not None:  # the options of this instance raised its minimum
            info[name] = {**entry, "status": "skipped", "reason": small, "note": small}
            continue
        metric = metric.to(device).eval()
        entry["trained"] = bool(getattr(metric, "trained", entry["trained"]))
        info[name] = {**entry, "status": "ok" if entry["trained"] else "untrained"}
        prints[name] = {k: entry.get(k) for k in FINGERPRINT_KEYS}
        hib = bool(getattr(metric, "higher_is_better", spec.higher_is_better))
        active.append(ActiveMetric(name, metric, hib))
    if config.checkpoint is not None and not takers:
        raise ValueError(f"--checkpoint {config.checkpoint} given, but none of {', '.join(names)} takes a "
                         "checkpoint; drop --checkpoint or add the metric it belongs to.")
    return active, info, prints


def describe_run(config: RunConfig, dataset: str, root: Path, device_type: str, versions: Mapping[str, str],
                 metric_prints: Mapping[str, Any], *, absent: Sequence[str] = (),
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dataset entry of ``run.json`` and the run's configuration fingerprint.

    The fingerprint's ``global`` part holds every setting that changes a stored number: dataset (and demo
    version), its resolved root, split, load size, device type, AMP, the versions of
    :data:`SCORING_PACKAGES` and the hash of the scoring code. Its ``data`` part (filled by the runner
    with :func:`listing_digests`) holds one listing digest per category. ``absent``: the
    ``"kind/category"`` of the plan that the data lacks.
    """
    info: dict[str, Any] = {"name": dataset, "root": str(root), "split": config.split,
                            "load_size": config.load_size, "synthetic_judgments": dataset == "demo",
                            "absent": sorted(absent)}
    glob: dict[str, Any] = {"dataset": dataset, "root": str(root), "split": config.split,
                            "load_size": config.load_size, "device_type": device_type, "amp": config.amp,
                            **{dist: versions[dist] for dist in SCORING_PACKAGES},
                            "scoring_code_sha256": scoring_code_sha256()}
    if dataset == "demo":
        from spips_bench.data.demo import DEMO_LABEL, DEMO_VERSION

        info.update(label=DEMO_LABEL, demo_version=DEMO_VERSION)
        glob["demo_version"] = DEMO_VERSION
    return info, {"global": glob, "metrics": dict(metric_prints)}


def start_record(config: RunConfig, *, previous: Mapping[str, Any] | None, versions: Mapping[str, str],
                 fingerprint: Mapping[str, Any], dataset: Mapping[str, Any],
                 metrics: Mapping[str, dict[str, Any]], device: Any, world_size: int, started: str,
                 ) -> dict[str, Any]:
    """The ``run.json`` of a run that starts now, keeping what an earlier run stored in the same folder."""
    import torch

    prev = previous or {}
    old_metrics = {k: v for k, v in prev.get("metrics", {}).items() if k not in metrics}
    metrics = {k: {**v, "scored": prev.get("metrics", {}).get(k, {}).get("scored", [])}
               for k, v in metrics.items()}
    old_prints = prev.get("fingerprint", {}).get("metrics", {})
    return {
        "format": RUN_FORMAT, "status": "running", "versions": dict(versions),
        "arguments": json_safe(asdict(config)),
        "fingerprint": json_safe({"global": fingerprint["global"],
                                  "data": {**prev.get("fingerprint", {}).get("data", {}),
                                           **fingerprint.get("data", {})},
                                  "metrics": {**old_prints, **fingerprint["metrics"]}}),
        "statistics": {"bootstrap": config.bootstrap, "seed": config.seed},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": world_size, "dataset": dict(dataset), "metrics": {**old_metrics, **metrics},
        "categories": dict(prev.get("categories", {})), "started": started,
    }


# -- reports -------------------------------------------------------------------------------------------


def _summaries(store: ScoreStore, record: Mapping[str, Any], n_boot: int, seed: int,
               ) -> tuple[list[Any], list[str]]:
    """Summary rows of every complete (kind, category, metric) in the store, plus footnotes.

    An infinite score is an ordered value (as in the official LPIPS evaluation) and stays in; a NaN
    score (the metric failed) is left out of every statistic of its metric. A (metric, category)
    without one usable sample gets a footnote instead of rows; the others are reported as usual.
    """
    import numpy as np

    from spips_bench.store import SCORE_COLUMNS
    from spips_bench.summary import summarize_2afc, summarize_jnd

    metrics: Mapping[str, Any] = record.get("metrics", {})
    expected: Mapping[str, int] = record.get("categories", {})
    skipped = skipped_counts(record)
    rows: list[Any] = []
    notes: list[str] = []
    nan_counts: dict[str, list[str]] = {}
    inf_counts: dict[str, list[str]] = {}
    order = {name: i for i, name in enumerate(metrics)}
    entries = sorted(store.entries(), key=lambda e: (e[0], e[1], order.get(e[2], len(order)), e[2]))
    for kind, category, metric in entries:
        info = metrics.get(metric)
        if info is None:
            notes.append(f"{metric}: scores found in the store but not in run.json; left out.")
            continue
        judgments = store.read_judgments(kind, category)
        scores = store.read_scores(kind, category, metric)
        n_expected = expected.get(f"{kind}/{category}")
        if n_expected is not None:  # skipped samples (--on-error skip) have no row: they are not owed
            n_expected -= skipped.get(f"{kind}/{category}", 0)
        foreign = sorted(set(scores) - set(judgments))
        if foreign or (n_expected is not None and len(judgments) > n_expected):
            path = (store.score_path(kind, category, metric) if foreign
                    else store.judgment_path(kind, category))
            what = (f"{len(foreign)} score row(s) for samples without a judgment (first: {foreign[0]!r})"
                    if foreign else f"{len(judgments)} judgment rows for {n_expected} samples")
            notes.append(f"{metric} on {kind}/{category}: left out: the store holds {what}, rows no run of "
                         f"this folder wrote; remove {path} and rerun to score it again.")
            continue
        if n_expected is None or len(judgments) != n_expected or set(scores) != set(judgments):
            notes.append(f"{metric} on {kind}/{category}: incomplete ({len(scores)} of "
                         f"{n_expected or len(judgments)} samples scored); rerun to finish it.")
            continue
        samples = sorted(judgments)
        h = np.array([judgments[s] for s in samples], dtype=np.float64)
        d = np.array([scores[s] for s in samples], dtype=np.float64)
        d = d.reshape(len(samples), len(SCORE_COLUMNS[kind]))
        failed = np.isnan(d).any(axis=1)
        infinite = np.isinf(d).any(axis=1) & ~failed
        keep = ~failed & np.isfinite(h)
        where = f"{kind}/{category}"
        if failed.any():
            nan_counts.setdefault(metric, []).append(f"{int(failed.sum())} of {len(samples)} in {where}")
        if infinite.any():
            inf_counts.setdefault(metric, []).append(f"{int(infinite.sum())} of {len(samples)} in {where}")
        if not keep.any():
            notes.append(f"{metric} on {where}: no statistics: every one of its {len(samples)} scores is NaN "
                         "(the metric failed on each; listed in run.json).")
            continue
        hib = bool(info["higher_is_better"])
        if kind == "2afc":
            rows += summarize_2afc(category, metric, d[keep, 0], d[keep, 1], h[keep], higher_is_better=hib,
                                   n_boot=n_boot, seed=seed)
        else:
            rows += summarize_jnd(category, metric, d[keep, 0], h[keep], higher_is_better=hib,
                                  n_boot=n_boot, seed=seed)
    for metric, places in nan_counts.items():
        notes.append(f"{metric}: NaN scores excluded from all statistics ({'; '.join(places)} samples; listed in "
                     "run.json).")
    for metric, places in inf_counts.items():
        notes.append(f"{metric}: infinite scores ({'; '.join(places)} samples, e.g. PSNR of identical images) are "
                     "ordered values, as in the official LPIPS evaluation, in every statistic but the PLCC of "
                     "d0 - d1 and of -d, which leave them out (its n says how many remain).")
    return rows, notes


def report_title(record: Mapping[str, Any]) -> str:
    """"BAPPS val", or "Demo set (synthetic judgments)" so that synthetic data is always labelled."""
    ds = record.get("dataset", {})
    if ds.get("synthetic_judgments"):
        return f"Demo set ({ds.get('label', 'synthetic judgments')})"
    return f"BAPPS {ds.get('split', '?')}"


def skipped_counts(record: Mapping[str, Any]) -> dict[str, int]:
    """Samples skipped under ``--on-error skip``, counted per ``"kind/category"``."""
    counts: dict[str, int] = {}
    for entry in record.get("skipped", []):
        key = f"{entry.get('kind')}/{entry.get('category')}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def skipped_metrics(record: Mapping[str, Any]) -> dict[str, list[str]]:
    """The metrics a run could not create, grouped by their short reason (``note``), in run order.

    A record written before notes existed groups its skipped metrics under one generic note.
    """
    groups: dict[str, list[str]] = {}
    for name, info in record.get("metrics", {}).items():
        if info.get("status") == "skipped":
            groups.setdefault(info.get("note") or "reason recorded in run.json", []).append(name)
    return groups


def skip_messages(record: Mapping[str, Any]) -> list[str]:
    """The lines that tell the user which metrics were not run: one per group with its fix, then each
    distinct detailed reason once (the same details are in ``run.json``)."""
    metrics: Mapping[str, Any] = record.get("metrics", {})
    lines: list[str] = []
    for note, names in skipped_metrics(record).items():
        lines.append(f"not run: {', '.join(names)}: {note}")
        details: dict[str, list[str]] = {}
        for name in names:
            reason = str(metrics[name].get("reason") or "")
            if reason and not reason.startswith(note):
                details.setdefault(reason, []).append(name)
        lines += [f"  details ({', '.join(who)}): {reason}" for reason, who in details.items()]
    return lines


def metric_footnotes(record: Mapping[str, Any]) -> list[str]:
    """Footnotes for skipped metrics and samples and the image size of the run (the tables mark
    untrained metrics themselves)."""
    notes: list[str] = []
    ds = record.get("dataset", {})
    size = ds.get("load_size")
    notes.append(f"Patches loaded at {size}x{size} px (PIL bilinear)." if size else
                 "Patches loaded at their stored size (no resizing).")
    for note, names in skipped_metrics(record).items():
        notes.append(f"Not run: {', '.join(names)} ({note}; details in run.json).")
    counts = skipped_counts(record)
    if counts:
        where = ", ".join(f"{n} in {key}" for key, n in counts.items())
        # No "--" here: LaTeX would typeset the flag's dashes as one en dash.
        notes.append(f"{sum(counts.values())} sample(s) skipped (on-error policy: skip): {where}. They are "
                     "left out of every statistic; run.json lists each with its file and the reason.")
    return notes


def absent_footnotes(record: Mapping[str, Any]) -> list[str]:
    """The footnote naming the categories of the plan that the data lacked, so that a table made from
    part of BAPPS says which rows it cannot have."""
    absent = record.get("dataset", {}).get("absent", [])
    if not absent:
        return []
    # No "--" here: LaTeX would typeset the flag's dashes as one en dash.
    return [f"Not scored, absent from the data: {', '.join(absent)}. The download command (spips-bench "
            "download bapps) fetches them; a rerun into this folder then adds them."]


def write_reports(out: str | os.PathLike[str], *, formats: Sequence[str] = ("md", "tex"),
                  compare_paper: bool = False, intervals: bool = False) -> dict[str, Path]:
    """Write ``summary.csv`` and the tables of the run folder ``out`` from its store alone.

    The bootstrap size and seed are those recorded in ``run.json``, so a rebuild gives byte-identical
    files. No metric is created and no image is read.

    Args:
        out: a run folder written by ``spips-bench run``.
        formats: any of ``"md"``, ``"tex"``.
        compare_paper: add the paper's published values beside ours where the tables know them.
        intervals: show bootstrap intervals in the tables.

    Returns:
        The paths written, keyed ``"summary"``, ``"md"``, ``"tex"``.

    Raises:
        RunConfigError: ``out`` has no ``run.json``.
        ValueError: an unknown format.
    """
    from spips_bench.summary import write_summary_csv
    from spips_bench.tables import MetricInfo, render_tables

    unknown = [f for f in formats if f not in REPORT_FILES]
    if unknown:
        raise ValueError(f"unknown table format(s) {unknown}; choose from {', '.join(REPORT_FILES)}.")
    store = ScoreStore(out)
    record = store.read_run()
    if record is None:
        raise RunConfigError(f"{store.run_file} not found: {store.root} is not a run folder of "
                             "`spips-bench run`. Point --from at the --out of a run.")
    stats = record.get("statistics", {})
    rows, notes = _summaries(store, record, int(stats.get("bootstrap", 1000)), int(stats.get("seed", 0)))
    written: dict[str, Path] = {"summary": store.root / "summary.csv"}
    write_summary_csv(written["summary"], rows)
    present = {r.metric for r in rows}
    infos = [MetricInfo(name, bool(info["higher_is_better"]), trained=bool(info.get("trained", True)),
                        ablation_of=info.get("ablation_of"))
             for name, info in record.get("metrics", {}).items() if name in present]
    footnotes = [*metric_footnotes(record), *absent_footnotes(record), *notes]
    for fmt in formats:
        text = render_tables(rows, infos, fmt=fmt, title=report_title(record), footnotes=footnotes,
                             compare_paper=compare_paper, intervals=intervals)
        written[fmt] = store.root / REPORT_FILES[fmt]
        atomic_write_text(written[fmt], text if text.endswith("\n") else text + "\n")
    return written


def nonfinite_samples(store: ScoreStore) -> list[dict[str, str]]:
    """Every stored non-finite score as ``{kind, category, metric, sample, column, value}``, sorted.

    ``value`` is ``"nan"`` (a failed score, left out of the statistics), ``"inf"`` or ``"-inf"`` (an
    ordered value, kept).
    """
    from spips_bench.store import SCORE_COLUMNS, format_value

    out: list[dict[str, str]] = []
    for kind, category, metric in store.entries():
        for sample, values in sorted(store.read_scores(kind, category, metric).items()):
            for column, v in zip(SCORE_COLUMNS[kind], values, strict=True):
                if not math.isfinite(v):
                    out.append({"kind": kind, "category": category, "metric": metric, "sample": sample,
                                "column": column, "value": format_value(v)})
    return out
