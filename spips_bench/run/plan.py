"""A run's plan: the (kind, category) pairs to score, what of them is on disk, and the metrics to build."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spips_bench.errors import DatasetError, RunConfigError, WeightsUnavailableError
from spips_bench.io import sha256_file
from spips_bench.run.config import BUILTIN_DATASETS, KINDS, RunConfig, metric_checkpoints, metric_names
from spips_bench.run.record import FINGERPRINT_KEYS, json_safe, weight_hashes, weight_packages

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


def resolve_plan(config: RunConfig, root: Path | None = None) -> list[tuple[str, str]]:
    """``(kind, category)`` pairs to score, validated against the split.

    For BAPPS and the demo set the categories are BAPPS's; for a dataset plugin they are those under
    ``root`` (its located root, which it then needs).

    Raises:
        ValueError: an unknown kind or category (with the valid names), a kind the split lacks, or a
            plugin dataset without ``root``.
    """
    from spips_bench.data.bapps import kind_splits, resolve_categories
    from spips_bench.stats.kinds import judgment_kind

    if config.dataset not in BUILTIN_DATASETS:
        from spips_bench.data.registry import get_dataset

        if root is None:
            raise ValueError(f"the plan of dataset {config.dataset!r} is read from its root; pass root.")
        return get_dataset(config.dataset).plan(root, config.split, config.kinds, config.categories)
    # A split that no kind has keeps the first kind, whose categories then name the valid splits.
    kinds = config.kinds or [k for k in KINDS if config.split in kind_splits(k)] or list(KINDS[:1])
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown kind {k!r} in --kinds; use {' and/or '.join(KINDS)}.")
        splits = kind_splits(k)
        if config.split not in splits and any(config.split in kind_splits(other) for other in KINDS):
            raise ValueError(f"BAPPS has {judgment_kind(k).label} judgments for {', '.join(splits)} only, not "
                             f"{config.split!r}; drop {k} from --kinds or use --split {splits[0]}.")
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
    from spips_bench.data.registry import get_dataset

    on_disk = get_dataset("bapps" if config.dataset == "auto" else config.dataset).present(root, config.split)
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


def data_listing(root: Path, split: str, pairs: Sequence[tuple[str, str]], dataset: str = "bapps",
                 ) -> dict[str, list[tuple[str, str]]]:
    """The file listing (names and sizes) of each ``(kind, category)`` of ``pairs``, keyed ``"kind/category"``
    (:meth:`spips_bench.data.registry.Dataset.listing` of the dataset called ``dataset``)."""
    from spips_bench.data.registry import get_dataset

    data = get_dataset("bapps" if dataset == "auto" else dataset)
    return {f"{k}/{c}": data.listing(root, k, split, c) for k, c in pairs}


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
    import warnings

    from spips_bench.errors import UntrainedHeadsWarning
    from spips_bench.registry import create_metric, get_spec

    names = metric_names(config.metrics)
    explicit = [n.strip().lower() for n in config.metrics] != ["all"]
    checkpoints = metric_checkpoints(config)
    hashes = {str(path): sha256_file(path) for path in dict.fromkeys(checkpoints.values())}
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
        if name in checkpoints:
            options["checkpoint"] = str(checkpoints[name])
            entry["checkpoint"] = str(checkpoints[name].resolve())
            entry["checkpoint_sha256"] = hashes[str(checkpoints[name])]
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
                with warnings.catch_warnings():  # run.json and the tables label untrained metrics
                    warnings.simplefilter("ignore", UntrainedHeadsWarning)
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
