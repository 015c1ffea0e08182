"""Every weight file the zoo uses: where it comes from, its SHA-256, where it is looked for, how it loads.

A file is looked for, in this order:

1. an explicit ``path`` argument;
2. ``$SPIPS_BENCH_WEIGHTS/<filename>`` (a folder you fill by hand on an offline machine);
3. the torch hub cache, ``torch.hub.get_dir()/checkpoints/<filename>`` (``$TORCH_HOME/hub/checkpoints``),
   shared with torchvision, so ImageNet trunks downloaded by torchvision are found;
4. the file shipped inside an installed wheel (LPIPS, DISTS and ST-LPIPS weights);
5. a download from the file's URL into the torch hub cache, unless offline mode is on
   (``offline=True``, ``SPIPS_BENCH_OFFLINE=1`` or the CLI's ``--offline``).

Every file is SHA-256 checked before it is read (hashes are cached per path, size and mtime, so a big file
is hashed once per process), and loaded with ``torch.load(weights_only=True)`` (or safetensors): a pickle
payload is never executed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spips_bench import settings
from spips_bench.errors import WeightsIntegrityError, WeightsUnavailableError
from spips_bench.io import FetchAdvice, fetch, is_loopback_url, replace_durably, sha256_file, write_error

if TYPE_CHECKING:
    import torch

ENV_WEIGHTS_DIR = settings.WEIGHTS
ENV_OFFLINE = settings.OFFLINE


@dataclass(frozen=True)
class WeightFile:
    """One weight file of the zoo.

    Attributes:
        name: the zoo's name for it (``"vgg16"``, ``"lpips-alex"``), used by metric cards.
        filename: the file name in caches and in ``$SPIPS_BENCH_WEIGHTS``; torchvision's own name for
            ImageNet trunks, so torchvision's cache is shared.
        url: where it is downloaded from, or ``None`` if it only ships inside a wheel.
        sha256: the full SHA-256 (64 hex digits) every copy must have.
        size: the size in bytes.
        license: the license of the weights.
        source: where the weights come from and how the hash was established.
        package: ``(import package, path inside it)`` of a copy shipped in an installed wheel, if any.
    """

    name: str
    filename: str
    url: str | None
    sha256: str
    size: int | None
    license: str
    source: str
    package: tuple[str, str] | None = None


_TV = "https://download.pytorch.org/models/"
_TV_LICENSE = "BSD-3-Clause (torchvision); trained on ImageNet, whose terms allow non-commercial research use"
_TV_SOURCE = (
    "torchvision ImageNet-1K weights (IMAGENET1K_V1). torchvision itself checks only the 8-digit prefix "
    "in the file name; the full SHA-256 is the one published for this exact file and agrees with it."
)
_LPIPS_LICENSE = "BSD-2-Clause (LPIPS, Zhang et al. 2018)"
_LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
_ST_URL = "https://github.com/abhijay9/ShiftTolerant-LPIPS/raw/main/stlpips_pytorch/weights/vST0.0/"
_ST_LICENSE = (
    "BSD-2-Clause (ST-LPIPS, Ghildyal & Liu 2022); its anti-aliasing blocks come from Adobe's "
    "antialiased-cnns, CC BY-NC-SA 4.0"
)

WEIGHTS: dict[str, WeightFile] = {
    w.name: w
    for w in [
        WeightFile("alexnet", "alexnet-owt-7be5be79.pth", _TV + "alexnet-owt-7be5be79.pth",
                   "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", 244_408_911,
                   _TV_LICENSE, _TV_SOURCE),
        WeightFile("vgg16", "vgg16-397923af.pth", _TV + "vgg16-397923af.pth",
                   "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", 553_433_881,
                   _TV_LICENSE, _TV_SOURCE),
        WeightFile("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth", _TV + "squeezenet1_1-b8a52dc0.pth",
                   "b8a52dc049b60e4b6ab68ad0df457362afab8b6304b2febdc1650a5dab4d7e7b", 4_958_839,
                   _TV_LICENSE, _TV_SOURCE),
        WeightFile("lpips-alex", "lpips-v0.1-alex-df73285e.pth", _LPIPS_URL + "alex.pth",
                   "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", 6_009,
                   _LPIPS_LICENSE, "LPIPS v0.1 linear layers for AlexNet, from the lpips wheel",
                   ("lpips", "weights/v0.1/alex.pth")),
        WeightFile("lpips-vgg", "lpips-v0.1-vgg-a78928a0.pth", _LPIPS_URL + "vgg.pth",
                   "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868", 7_289,
                   _LPIPS_LICENSE, "LPIPS v0.1 linear layers for VGG16, from the lpips wheel",
                   ("lpips", "weights/v0.1/vgg.pth")),
        WeightFile("lpips-squeeze", "lpips-v0.1-squeeze-4a5350f2.pth", _LPIPS_URL + "squeeze.pth",
                   "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76", 10_811,
                   _LPIPS_LICENSE, "LPIPS v0.1 linear layers for SqueezeNet 1.1, from the lpips wheel",
                   ("lpips", "weights/v0.1/squeeze.pth")),
        WeightFile("dists", "DISTS_weights-f5e65c96.pth",
                   "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/DISTS_weights-f5e65c96.pth",
                   "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218", 12_288,
                   "MIT (DISTS, Ding et al. 2020)",
                   "DISTS alpha/beta, the DISTS_pytorch wheel's weights.pt; pyiqa publishes the same "
                   "file under the URL's name, which carries this SHA-256's prefix",
                   ("DISTS_pytorch", "weights.pt")),
        WeightFile("stlpips-alex", "stlpips-alex_shift_tolerant-b356b382.pth", _ST_URL + "alex_shift_tolerant.pth",
                   "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee", 9_899_296,
                   _ST_LICENSE, "ST-LPIPS full network (shift-tolerant AlexNet + linear layers), "
                   "from the stlpips-pytorch wheel",
                   ("stlpips_pytorch", "weights/vST0.0/alex_shift_tolerant.pth")),
        WeightFile("stlpips-vgg", "stlpips-vgg_shift_tolerant-44597da6.pth", _ST_URL + "vgg_shift_tolerant.pth",
                   "44597da68f49c1837c100ff52299050f274d102eb102e5837178c79be6f0e250", 58_907_298,
                   _ST_LICENSE, "ST-LPIPS full network (shift-tolerant VGG16 + linear layers), "
                   "from the stlpips-pytorch wheel",
                   ("stlpips_pytorch", "weights/vST0.0/vgg_shift_tolerant.pth")),
    ]
}


# -- configuration -----------------------------------------------------------------------------------

def is_offline(offline: bool | None = None) -> bool:
    """Whether downloads are forbidden: ``offline`` if given, else :func:`spips_bench.settings.offline`
    (``--offline``, or ``SPIPS_BENCH_OFFLINE`` 1/true/yes/on)."""
    if offline is not None:
        return bool(offline)
    return settings.offline()


def hub_checkpoint_dir() -> Path:
    """The torch hub cache folder for weight files (``$TORCH_HOME/hub/checkpoints``)."""
    if "torch" in sys.modules:  # honours torch.hub.set_dir() when torch is already in use
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints"
    # torch.hub's own rule, without importing torch (keeps `spips-bench list` and `weights` fast)
    return settings.torch_home() / "hub" / "checkpoints"


def _get(name: str) -> WeightFile:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise KeyError(f"unknown weight file {name!r}; known: {', '.join(sorted(WEIGHTS))}") from None


def package_path(wf: WeightFile) -> Path | None:
    """Where ``wf`` sits inside an installed wheel, found without importing that package."""
    if wf.package is None:
        return None
    pkg, rel = wf.package
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / rel
        if candidate.is_file():
            return candidate
    return None


def _candidates(wf: WeightFile) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    env_dir = settings.weights_dir()
    if env_dir is not None:
        out.append((f"${ENV_WEIGHTS_DIR}", env_dir / wf.filename))
    out.append(("torch hub cache", hub_checkpoint_dir() / wf.filename))
    pkg = package_path(wf)
    if pkg is not None:
        out.append((f"{wf.package[0]} package" if wf.package else "package", pkg))
    return out


def locate(name: str) -> tuple[str, Path] | None:
    """``(where, path)`` of the first existing copy of ``name`` (no hashing, no download), or ``None``."""
    for where, p in _candidates(_get(name)):
        if p.is_file():
            return where, p
    return None


def is_present(name: str) -> bool:
    """Whether a copy of weight file ``name`` exists on this machine (cheap: no hashing, no download)."""
    return locate(name) is not None


def verify(name: str, path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is a copy of weight file ``name``; raise :class:`WeightsIntegrityError` if not."""
    wf = _get(name)
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailableError(f"{p}: no such file (given for weight file {name!r}); check the path.")
    digest = sha256_file(p)
    if digest != wf.sha256:
        raise WeightsIntegrityError(
            f"{p}: SHA-256 {digest} does not match weight file {name!r} ({wf.filename}), which must have "
            f"SHA-256 {wf.sha256}. The file is corrupt, truncated or a different file; delete it and "
            f"download it again{f' from {wf.url}' if wf.url else ''}."
        )
    return p


# -- resolution and download ---------------------------------------------------------------------------

def _unavailable_message(wf: WeightFile, reason: str) -> str:
    env_dir = settings.weights_dir()
    target = env_dir / wf.filename if env_dir is not None else hub_checkpoint_dir() / wf.filename
    size = f", {wf.size:,} bytes" if wf.size else ""
    url = wf.url or "(no download URL; install the package that ships it)"
    pkg_hint = f" or install the Python package {wf.package[0]!r}, which ships it" if wf.package else ""
    return (
        f"weight file {wf.name!r} ({wf.filename}{size}) is not on this machine and {reason}. "
        f"Download {url} (SHA-256 {wf.sha256}) on a machine with network and put it at {target}"
        f"{pkg_hint}; or set ${ENV_WEIGHTS_DIR} to a folder that holds {wf.filename}; "
        f"or run `spips-bench weights fetch {wf.name}` where the network is reachable."
    )


def resolve(name: str, *, path: str | os.PathLike[str] | None = None, offline: bool | None = None,
            progress: bool = True) -> Path:
    """Find (or download) weight file ``name`` and return the path of a verified copy.

    Args:
        name: a key of :data:`WEIGHTS`.
        path: an explicit file to use instead of the search; it must have the right SHA-256.
        offline: forbid downloads; ``None`` reads ``SPIPS_BENCH_OFFLINE``.
        progress: show a progress bar while downloading.

    Raises:
        WeightsUnavailableError: no copy exists and downloading is forbidden or impossible.
        WeightsIntegrityError: the copy found has the wrong SHA-256 (it is never loaded).
    """
    wf = _get(name)
    if path is not None:
        return verify(name, path)
    found = locate(name)
    if found is not None:
        return verify(name, found[1])
    if is_offline(offline):
        raise WeightsUnavailableError(_unavailable_message(wf, "offline mode forbids downloading it"))
    if wf.url is None:
        raise WeightsUnavailableError(_unavailable_message(wf, "it has no download URL"))
    return download(name, progress=progress, offline=offline)


def download(name: str, *, dest_dir: str | os.PathLike[str] | None = None, progress: bool = True,
             url: str | None = None, offline: bool | None = None, retries: int = 5, timeout: float = 60.0,
             backoff: float = 1.0) -> Path:
    """Download weight file ``name`` into ``dest_dir`` (default: the torch hub cache) and verify it.

    The data goes to ``<file>.part`` first (through :func:`spips_bench.io.fetch`: a dropped connection
    is resumed with ``Range``, here or on the next call, and retried ``retries`` times after ``backoff``
    seconds, doubled each time) and is renamed only after the SHA-256 matched, so an interrupted or
    corrupted download never leaves a file that looks complete. In offline mode (``offline``, or
    ``SPIPS_BENCH_OFFLINE`` when it is None) only this machine may be contacted: a URL, or any
    redirect, to another host is refused before connecting.

    Raises:
        WeightsUnavailableError: no URL, offline mode forbids the host, the transfer failed (the bytes
            received are kept in ``<file>.part`` for the next call) or the file cannot be written.
        WeightsIntegrityError: the downloaded bytes have the wrong SHA-256 (nothing is kept).
    """
    wf = _get(name)
    src = url or wf.url
    if src is None:
        raise WeightsUnavailableError(_unavailable_message(wf, "it has no download URL"))
    local_only = is_offline(offline)
    if local_only and not is_loopback_url(src):
        raise WeightsUnavailableError(_unavailable_message(wf, "offline mode forbids downloading it"))
    folder = Path(dest_dir) if dest_dir is not None else hub_checkpoint_dir()
    final = folder / wf.filename
    part = final.with_name(final.name + ".part")
    where = "TORCH_HOME"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(WeightsUnavailableError, exc, folder, where) from exc
    by_hand = f"or download {src} by hand, check that its SHA-256 is {wf.sha256} and put it at {final}."
    advice = FetchAdvice(
        http=f"Check the URL, {by_hand}",
        retry=f"Run the same command again to resume, {by_hand}",
        no_length=f"retry later, {by_hand}",
        size_changed=f"weight file {name!r} has {{size}}; the server holds another file. Retry later, {by_hand}",
        write_option=where,
    )
    size, digest = fetch(src, part, advice=advice, error=WeightsUnavailableError, known_size=wf.size,
                         progress=progress, retries=retries, timeout=timeout, backoff=backoff,
                         local_only=local_only, desc=wf.filename)
    if digest != wf.sha256:
        part.unlink(missing_ok=True)
        raise WeightsIntegrityError(
            f"download of {src} for weight file {name!r} has SHA-256 {digest} ({size} bytes), expected "
            f"{wf.sha256}; nothing was saved. Retry later, or fetch the file by hand and check its SHA-256."
        )
    try:
        replace_durably(part, final)
    except OSError as exc:
        raise write_error(WeightsUnavailableError, exc, final, where,
                          f"The verified download is kept as {part}.") from exc
    return final


# -- loading -----------------------------------------------------------------------------------------

def load_file(path: str | os.PathLike[str], *, label: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` safely: safetensors, or ``torch.load(weights_only=True)``.

    Raises:
        WeightsIntegrityError: the file holds objects other than tensors (a pickle payload, which is
            refused and never executed), is not a mapping of names to tensors, or holds a tensor that is
            not floating point or has NaN or infinite values (see :func:`check_tensors`).
    """
    import pickle

    import torch

    p = Path(path)
    what = f"{p} ({label})" if label else str(p)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file as st_load

        loaded = dict(st_load(str(p), device="cpu"))
        check_tensors(loaded, what)
        return loaded
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise WeightsIntegrityError(
            f"{what}: refused to load: it is not a plain tensor checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Only weights_only=True loading is allowed, "
            "so arbitrary pickled code is never run; replace the file with a genuine copy."
        ) from exc
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsIntegrityError(f"{what}: expected a mapping of names to tensors, got {type(obj).__name__}.")
    state = {str(k): v for k, v in obj.items()}
    check_tensors(state, what)
    return state


# Integer tensors a genuine checkpoint may hold: BatchNorm's step counter, never used by a forward pass.
_COUNTER_SUFFIXES = (".num_batches_tracked", "num_batches_tracked")


def check_tensors(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse a state dict whose tensors are not floating point or hold NaN or infinite values.

    A weight of integer or bool dtype is not a trained weight (loaded into a float module it silently
    turns every score into a constant), and a NaN or infinite one makes every score NaN. BatchNorm's
    integer ``num_batches_tracked`` counters are allowed.

    Raises:
        WeightsIntegrityError: naming ``what`` (the file), the tensor, its dtype or its non-finite count.
    """
    import torch

    for key, value in state.items():
        if not (value.is_floating_point() or key.endswith(_COUNTER_SUFFIXES)):
            raise WeightsIntegrityError(
                f"{what}: tensor {key!r} has dtype {str(value.dtype).removeprefix('torch.')}, not floating "
                "point; trained weights are floats, so this file was written by another program or is damaged. "
                "Replace it with a genuine copy (or retrain it)."
            )
        if value.is_floating_point() and value.numel():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise WeightsIntegrityError(
                    f"{what}: tensor {key!r} holds {bad} NaN or infinite value(s) of {value.numel()}; every "
                    "score would be NaN. The training diverged or the file is damaged; use an earlier "
                    "checkpoint or retrain."
                )


def load_state_dict(name: str, *, path: str | os.PathLike[str] | None = None,
                    offline: bool | None = None) -> dict[str, torch.Tensor]:
    """Resolve, verify and load weight file ``name`` as ``{key: tensor}`` on the CPU."""
    p = resolve(name, path=path, offline=offline)
    return load_file(p, label=f"weight file {name!r}")


def remap_keys(state: Mapping[str, torch.Tensor], mapping: Mapping[str, str], *, source: str,
               ignore: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys exactly; any key missing from ``state`` or left over is an error.

    Args:
        state: the checkpoint.
        mapping: checkpoint key -> module key, for every key that must be loaded.
        source: how errors name the checkpoint (file and weight name).
        ignore: checkpoint key prefixes that are known and deliberately not loaded (a classifier head).
    """
    prefixes = tuple(ignore)
    missing = [k for k in mapping if k not in state]
    unexpected = [k for k in state if k not in mapping and not (prefixes and k.startswith(prefixes))]
    if missing or unexpected:
        raise WeightsIntegrityError(
            f"{source}: keys do not match the expected layout; missing {missing[:6]}"
            f"{'...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
            f"{'...' if len(unexpected) > 6 else ''}. The file is not the checkpoint this metric expects."
        )
    return {dst: state[src] for src, dst in mapping.items()}


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """``module.load_state_dict(state, strict=True)``, with shape or key errors as WeightsIntegrityError."""
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise WeightsIntegrityError(f"{source}: does not fit {type(module).__name__}: {exc}") from exc


# -- status for the CLI ------------------------------------------------------------------------------

def status() -> list[dict[str, Any]]:
    """One row per weight file: name, filename, where it is (or ``None``), path, size, sha256, license, url,
    and ``package`` (import name of the wheel that ships it, or ``None``) with ``package_installed``.

    Cheap: nothing is hashed, imported or downloaded.
    """
    rows: list[dict[str, Any]] = []
    for wf in WEIGHTS.values():
        found = locate(wf.name)
        package = wf.package[0] if wf.package else None
        rows.append({
            "name": wf.name,
            "filename": wf.filename,
            "present": found is not None,
            "where": found[0] if found else None,
            "path": str(found[1]) if found else None,
            "size": found[1].stat().st_size if found else wf.size,
            "sha256": wf.sha256,
            "license": wf.license,
            "url": wf.url,
            "package": package,
            "package_installed": package is not None and importlib.util.find_spec(package) is not None,
        })
    return rows
