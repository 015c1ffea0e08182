"""A run's record (``run.json``): versions, fingerprint, scoring-code hash, dataset and metric entries.

``run.json`` says what produced the scores beside it: versions, arguments, device, dataset, weight and
checkpoint SHA-256, per-metric status, timings. Its ``fingerprint`` holds exactly the settings that
change a stored number; a later run into the same folder must match it (see
:func:`check_fingerprint`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from spips_bench.errors import RunConfigError
from spips_bench.run.config import RunConfig
from spips_bench.run.store import ScoreStore

RUN_FORMAT = "spips-bench-run/2"
#: The per-metric settings that change its scores; a run folder refuses a metric whose settings differ.
FINGERPRINT_KEYS = ("target", "options", "weights", "checkpoint_sha256", "trained", "packages")


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

    packages = [wf.package[0] for wf in (WEIGHTS.get(name) for name in weights) if wf is not None and wf.package]
    if not packages:
        return {}  # no scan of the installed distributions (a second or so) for metrics without weight files
    dists = _distributions()
    out: dict[str, str] = {}
    for package in packages:
        for dist in dists.get(package, [package]):
            out[dist] = _version(dist)
    return dict(sorted(out.items()))


#: Package files whose code can change a stored score (the reports are rebuilt from the store anyway):
#: the metrics and their cards, input validation, image decoding, weight loading and hashing, the
#: readers, and the runner's scoring path (its configuration, ranks and loop), store and registry.
SCORING_CODE = ("metric.py", "validation.py", "io.py", "data/images.py", "weights.py", "data/bapps.py",
                "data/registry.py", "data/cards", "stats/kinds.py", "zoo", "cards", "run/config.py",
                "run/distributed.py", "run/runner.py", "run/store.py", "registry.py")
#: Files under :data:`SCORING_CODE` folders that draw or explain scores but never compute a stored one.
SCORING_CODE_EXCLUDED = ("zoo/spips/explain.py",)
#: The package folder the paths of :data:`SCORING_CODE` are relative to.
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def scoring_code_files() -> list[Path]:
    """The files of :data:`SCORING_CODE` (Python sources and metric cards), in hashing order."""
    root = _PACKAGE_ROOT
    files: list[Path] = []
    for entry in SCORING_CODE:
        path = root / entry
        found = sorted(f for f in path.rglob("*") if f.suffix in (".py", ".toml")) if path.is_dir() else [path]
        files += [f for f in found if f.is_file() and f.relative_to(root).as_posix() not in SCORING_CODE_EXCLUDED]
    return files


def scoring_code_sha256() -> str:
    """One SHA-256 over the package's scoring code, so that scores of edited code are never mixed.

    A released version changes with its code; an editable install can change without a new version,
    and this hash notices it.
    """
    root = _PACKAGE_ROOT
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


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (paths and other objects as strings, keys sorted)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


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
    if dataset not in ("bapps", "demo"):  # a dataset plugin: its registry entry says what it is
        from spips_bench.data.registry import get_dataset

        entry = get_dataset(dataset)
        info.update(synthetic_judgments=bool(entry.synthetic), title=entry.report_title(config.split),
                    source=entry.source)
        glob["dataset_source"] = entry.source
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


def nonfinite_samples(store: ScoreStore) -> list[dict[str, str]]:
    """Every stored non-finite score as ``{kind, category, metric, sample, column, value}``, sorted.

    ``value`` is ``"nan"`` (a failed score, left out of the statistics), ``"inf"`` or ``"-inf"`` (an
    ordered value, kept).
    """
    from spips_bench.run.store import format_value
    from spips_bench.stats.kinds import judgment_kind

    out: list[dict[str, str]] = []
    for kind, category, metric in store.entries():
        for sample, values in sorted(store.read_scores(kind, category, metric).items()):
            for column, v in zip(judgment_kind(kind).score_columns, values, strict=True):
                if not math.isfinite(v):
                    out.append({"kind": kind, "category": category, "metric": metric, "sample": sample,
                                "column": column, "value": format_value(v)})
    return out
