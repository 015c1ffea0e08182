"""BAPPS readers: 2AFC triplets and JND pairs, streamed from disk and paired by file name.

Layout (the official archives' ``dataset/`` folder, Zhang et al., CVPR 2018)::

    ROOT/2afc/{train,val}/CATEGORY/{ref,p0,p1,judge}/000000.png | 000000.npy
    ROOT/jnd/val/CATEGORY/{p0,p1,same}/000000.png | 000000.npy

Files are paired by stem, not by position in a sorted listing: a folder whose names do not match the
others is refused with the missing names. Listing uses :func:`os.scandir` only; images and judgments
are read in ``__getitem__``, so memory does not grow with the size of the set and DataLoader workers
do the decoding.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from spips_bench.errors import DatasetError
from spips_bench.imageio import read_image

TWO_AFC_CATEGORIES: dict[str, tuple[str, ...]] = {
    "train": ("traditional", "cnn", "mix"),
    "val": ("traditional", "cnn", "superres", "deblur", "color", "frameinterp"),
}
JND_CATEGORIES: tuple[str, ...] = ("traditional", "cnn")
JND_SPLITS: tuple[str, ...] = ("val",)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
JUDGMENT_SUFFIX = ".npy"
_SHOW = 5  # how many missing names an error message lists

__all__ = [
    "JND_CATEGORIES",
    "JND_SPLITS",
    "TWO_AFC_CATEGORIES",
    "JNDDataset",
    "TwoAFCDataset",
    "bapps_present",
    "collate",
    "default_bapps_root",
    "read_judgment",
    "resolve_categories",
]


def _did_you_mean(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_split(kind: str, split: str) -> tuple[str, ...]:
    if kind == "2afc":
        splits: Sequence[str] = tuple(TWO_AFC_CATEGORIES)
    elif kind == "jnd":
        splits = JND_SPLITS
    else:
        raise ValueError(f"unknown BAPPS kind {kind!r}; use '2afc' or 'jnd'.")
    if split not in splits:
        raise ValueError(
            f"BAPPS {kind} has no split {split!r}; choose one of {', '.join(splits)}."
            + _did_you_mean(split, splits)
        )
    return TWO_AFC_CATEGORIES[split] if kind == "2afc" else JND_CATEGORIES


def resolve_categories(kind: str, split: str, requested: list[str] | None) -> list[str]:
    """Validate category names for a BAPPS kind and split.

    Args:
        kind: ``"2afc"`` or ``"jnd"``.
        split: ``"train"`` or ``"val"`` for 2AFC; only ``"val"`` for JND.
        requested: category names, or None (or an empty list) for all categories in the official order.

    Returns:
        The categories in the order requested, duplicates removed.

    Raises:
        ValueError: unknown kind, split or category; the message suggests the closest valid name.
    """
    known = _check_split(kind, split)
    if not requested:
        return list(known)
    out: list[str] = []
    for name in requested:
        if name not in known:
            raise ValueError(
                f"BAPPS {kind} {split} has no category {name!r}; choose from {', '.join(known)}."
                + _did_you_mean(name, known)
            )
        if name not in out:
            out.append(name)
    return out


def default_bapps_root() -> Path:
    """``$SPIPS_BENCH_BAPPS`` if set, else ``./datasets/bapps`` (the download command's default root)."""
    env = os.environ.get("SPIPS_BENCH_BAPPS")
    return Path(env).expanduser() if env else Path.cwd() / "datasets" / "bapps"


def bapps_present(root: str | os.PathLike[str], split: str = "val") -> bool:
    """True when every 2AFC category folder of ``split`` exists under ``root/2afc/split``.

    Only folders are checked (cheap); the readers check the files.
    """
    cats = _check_split("2afc", split)
    base = Path(root) / "2afc" / split
    return all((base / c).is_dir() for c in cats)


def _list_folder(folder: Path, suffixes: frozenset[str]) -> dict[str, str]:
    """Map stem -> file name for the files of ``folder`` (hidden files ignored)."""
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: folder not found. Download BAPPS with `spips-bench download bapps --root DIR` "
            "or point --root at the folder that holds 2afc/ and jnd/."
        )
    found: dict[str, str] = {}
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() not in suffixes:
                raise DatasetError(
                    f"{folder / entry.name}: unexpected file in a BAPPS folder (expected "
                    f"{', '.join(sorted(suffixes))}); remove it."
                )
            if stem in found:
                raise DatasetError(
                    f"{folder}: two files share the name {stem!r} ({found[stem]}, {entry.name}); "
                    "keep one."
                )
            found[stem] = entry.name
    return found


def _pair_by_name(base: Path, parts: dict[str, frozenset[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """List each part folder of ``base`` and return the sorted common stems and file names per part."""
    listings = {part: _list_folder(base / part, suffixes) for part, suffixes in parts.items()}
    every = set().union(*listings.values())
    problems = []
    for part, listing in listings.items():
        missing = sorted(every - listing.keys())
        if missing:
            more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
            problems.append(
                f"{base / part} lacks {len(missing)} name(s) present in the other folders: "
                + ", ".join(missing[:_SHOW]) + more
            )
    if problems:
        raise DatasetError(
            "BAPPS files are paired by name and these do not pair up: "
            + "; ".join(problems)
            + ". Re-extract the archive or remove the unpaired files."
        )
    if not every:
        raise DatasetError(f"{base}: the folders {', '.join(parts)} are empty; re-extract the archive.")
    names = sorted(every)
    return names, {part: [listing[n] for n in names] for part, listing in listings.items()}


def read_judgment(path: str | os.PathLike[str]) -> float:
    """Read one BAPPS judgment file: a ``.npy`` holding a single finite float in [0, 1].

    Raises:
        DatasetError: the file is unreadable, holds more or fewer than one value, a non-number, or a
            value outside [0, 1].
    """
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(
            f"{p}: not a readable .npy judgment file ({exc}); re-extract the archive."
        ) from exc
    if not isinstance(arr, np.ndarray) or arr.size != 1:
        shape = getattr(arr, "shape", type(arr).__name__)
        raise DatasetError(f"{p}: a judgment file must hold exactly one value, found shape {shape}; "
                           "re-extract the archive.")
    if arr.dtype.kind not in "fiu":
        raise DatasetError(f"{p}: judgment of dtype {arr.dtype} is not a number; re-extract the archive.")
    value = float(arr.reshape(()))
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DatasetError(f"{p}: judgment {value!r} is not a finite fraction in [0, 1]; "
                           "re-extract the archive or remove this item.")
    return value


class _PairedFolders(Dataset[dict[str, Any]]):
    """Items made of image parts and one judgment part, all sharing a stem."""

    _image_parts: tuple[str, ...] = ()
    _judgment_part: str = ""
    _kind: str = ""

    def __init__(self, root: str | os.PathLike[str], split: str, category: str,
                 load_size: int | None = 64) -> None:
        if load_size is not None and (isinstance(load_size, bool) or not isinstance(load_size, int)
                                      or load_size < 1):
            raise ValueError(f"load_size must be a positive int or None (native size), got {load_size!r}.")
        resolve_categories(self._kind, split, [category])
        self.root = Path(root)
        self.split = split
        self.category = category
        self.load_size = load_size
        self.folder = self.root / self._kind / split / category
        if not self.folder.is_dir():
            raise DatasetError(
                f"{self.folder}: BAPPS {self._kind} {split}/{category} not found. Download it with "
                f"`spips-bench download bapps --split {'jnd' if self._kind == 'jnd' else split} --root "
                f"{self.root}`, or pass the folder that holds 2afc/ and jnd/."
            )
        parts = {p: IMAGE_SUFFIXES for p in self._image_parts}
        parts[self._judgment_part] = frozenset({JUDGMENT_SUFFIX})
        self.names, self._files = _pair_by_name(self.folder, parts)

    def __len__(self) -> int:
        return len(self.names)

    def path(self, index: int, part: str) -> Path:
        """The file of ``part`` (e.g. ``"p0"``) for item ``index``."""
        return self.folder / part / self._files[part][index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items in {self.folder}")
        index %= len(self)
        item: dict[str, Any] = {}
        conversions: list[str] = []
        for part in self._image_parts:
            loaded = read_image(self.path(index, part), self.load_size)
            if loaded.conversion is not None:
                conversions.append(f"{part}: {loaded.conversion}")
            item[part] = loaded.tensor()
        value = read_judgment(self.path(index, self._judgment_part))
        item[self._judgment_part] = torch.tensor(value, dtype=torch.float32)
        item["name"] = self.names[index]
        item["conversions"] = conversions
        return item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"category={self.category!r}, load_size={self.load_size}, items={len(self)})")


class TwoAFCDataset(_PairedFolders):
    """BAPPS two-alternative forced choice triplets of ``root/2afc/{split}/{category}``.

    Each item is a dict: ``"ref"``, ``"p0"``, ``"p1"`` are ``(3, H, W)`` float32 tensors in [0, 1]
    (``H = W = load_size``, or the stored size when ``load_size`` is None); ``"judge"`` is a float32
    scalar tensor, the fraction of raters who preferred p1 (0 = all chose p0); ``"name"`` is the file
    stem (e.g. ``"000123"``); ``"conversions"`` lists any grayscale/RGBA/16-bit conversion made.

    Args:
        root: folder holding ``2afc/`` (the official archives' ``dataset/``).
        split: ``"train"`` or ``"val"``.
        category: one of ``TWO_AFC_CATEGORIES[split]``.
        load_size: side in pixels of the PIL bilinear resize (BAPPS protocol: 64); None keeps the
            stored size.

    Raises:
        ValueError: unknown split or category, or a bad load_size.
        DatasetError: the folder is missing, or its files do not pair up by name.
    """

    _image_parts = ("ref", "p0", "p1")
    _judgment_part = "judge"
    _kind = "2afc"


class JNDDataset(_PairedFolders):
    """BAPPS just-noticeable-difference pairs of ``root/jnd/{split}/{category}`` (split ``"val"`` only).

    Each item is a dict: ``"p0"``, ``"p1"`` are ``(3, H, W)`` float32 tensors in [0, 1]; ``"same"`` is
    a float32 scalar tensor, the fraction of raters who judged the two patches identical; ``"name"``
    and ``"conversions"`` as in :class:`TwoAFCDataset`.

    Args:
        root: folder holding ``jnd/``.
        split: ``"val"``.
        category: one of ``JND_CATEGORIES``.
        load_size: as in :class:`TwoAFCDataset`.
    """

    _image_parts = ("p0", "p1")
    _judgment_part = "same"
    _kind = "jnd"


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of dataset items into a batch for ``DataLoader(collate_fn=collate)``.

    Tensors are stacked along a new first dimension (images ``(N, 3, H, W)``, judgments ``(N,)``);
    ``"name"`` becomes a list of N stems and ``"conversions"`` a list of N lists.

    Raises:
        ValueError: an empty batch, items with different keys, or images of different sizes (use a
            ``load_size`` to resize them all).
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    keys = batch[0].keys()
    for item in batch[1:]:
        if item.keys() != keys:
            raise ValueError(
                f"cannot collate items with different keys: {sorted(keys)} vs {sorted(item.keys())}"
            )
    out: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(
                    f"cannot stack {key!r} of different shapes {sorted(shapes)} (items "
                    f"{[item.get('name') for item in batch][:_SHOW]}); set load_size to resize them."
                )
            out[key] = torch.stack(values)
        else:
            out[key] = list(values)
    return out
