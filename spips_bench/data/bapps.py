"""BAPPS readers: 2AFC triplets and JND pairs, streamed from disk and paired by file name.

Layout (the official archives' ``dataset/`` folder, Zhang et al., CVPR 2018)::

    ROOT/2afc/{train,val}/CATEGORY/{ref,p0,p1,judge}/000000.png | 000000.npy
    ROOT/jnd/val/CATEGORY/{p0,p1,same}/000000.png | 000000.npy

Files are paired by stem, not by position in a sorted listing: a folder whose names do not match the
others is refused with the missing names. Listing uses :func:`os.scandir` only; images and judgments
are read in ``__getitem__``, so memory does not grow with the size of the set and DataLoader workers
do the decoding.

With ``report_problems=True`` (what the runner uses) a sample that cannot be used does not raise: its
item is ``{"name": ..., "problem": {"file", "reason", "error"}}``, unpaired names are kept as such
items, and :func:`collate` moves them to the batch's ``"problems"`` list. The caller decides whether
a problem stops the run or skips the sample, and can say so in the main process with a clean message
(an exception raised inside a DataLoader worker comes back wrapped in the worker's traceback).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from spips_bench.data.cache import PatchCache
from spips_bench.data.cards import load_card
from spips_bench.data.images import read_image
from spips_bench.errors import DatasetError, ImageReadError, did_you_mean
from spips_bench.run.store import sample_problem
from spips_bench.stats.kinds import JND, TWO_AFC, JudgmentKind, judgment_kind

# The names are those of the card spips_bench/data/cards/bapps.toml, in the official order.
_CARD = load_card("bapps")
TWO_AFC_CATEGORIES: dict[str, tuple[str, ...]] = {s: tuple(c) for s, c in _CARD["categories"]["2afc"].items()}
JND_CATEGORIES: tuple[str, ...] = tuple(_CARD["categories"]["jnd"]["val"])
JND_SPLITS: tuple[str, ...] = tuple(_CARD["splits"]["jnd"])
#: ``{kind name: {split: categories}}``, from the card, in its order.
_CATEGORIES: dict[str, dict[str, tuple[str, ...]]] = {
    kind: {s: tuple(c) for s, c in by_split.items()} for kind, by_split in _CARD["categories"].items()
}

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
    "category_listing",
    "collate",
    "default_bapps_root",
    "kind_splits",
    "present_categories",
    "read_judgment",
    "reader_for",
    "resolve_categories",
]



def _bapps_kind(kind: str | JudgmentKind) -> str:
    """The name of a kind BAPPS has; ValueError naming the kinds it has otherwise."""
    try:
        return judgment_kind(kind, tuple(_CATEGORIES)).name
    except ValueError:
        known = ", ".join(repr(k) for k in _CATEGORIES)
        raise ValueError(f"unknown BAPPS kind {str(kind)!r}; use one of {known}."
                         + did_you_mean(str(kind), tuple(_CATEGORIES))) from None


def _check_split(kind: str | JudgmentKind, split: str) -> tuple[str, ...]:
    name = _bapps_kind(kind)
    splits: Sequence[str] = tuple(_CATEGORIES[name])
    if split not in splits:
        raise ValueError(
            f"BAPPS {name} has no split {split!r}; choose one of {', '.join(splits)}."
            + did_you_mean(split, splits)
        )
    return _CATEGORIES[name][split]


def kind_splits(kind: str | JudgmentKind) -> tuple[str, ...]:
    """The BAPPS splits that have judgments of ``kind`` (2AFC: train and val; JND: val).

    Raises:
        ValueError: a kind BAPPS does not have.
    """
    return tuple(_CATEGORIES[_bapps_kind(kind)])


def resolve_categories(kind: str | JudgmentKind, split: str, requested: list[str] | None) -> list[str]:
    """Validate category names for a BAPPS kind and split.

    Args:
        kind: a judgment kind or its name (``"2afc"``, ``"jnd"``).
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
                + did_you_mean(name, known)
            )
        if name not in out:
            out.append(name)
    return out


def default_bapps_root() -> Path:
    """``$SPIPS_BENCH_BAPPS`` if set, else ``./datasets/bapps``: the default root of run, train and download."""
    from spips_bench.settings import bapps_root

    return bapps_root()[0]


def present_categories(root: str | os.PathLike[str], split: str = "val") -> dict[str, list[str]]:
    """The category folders of ``split`` that exist under ``root``, per kind (``"2afc"``, ``"jnd"``).

    Only folders are checked (cheap); the readers check the files. Kinds without the split are absent
    from the result.
    """
    out: dict[str, list[str]] = {}
    for kind, by_split in _CATEGORIES.items():
        if split in by_split:
            base = Path(root).joinpath(*judgment_kind(kind).folder(split))
            out[kind] = [c for c in by_split[split] if (base / c).is_dir()]
    return out


def bapps_present(root: str | os.PathLike[str], split: str = "val") -> bool:
    """True when ``root`` holds at least one BAPPS category folder of ``split`` (2AFC or JND).

    A partial tree counts: the runner scores what is there and names what is not.
    """
    return any(present_categories(root, split).values())


def category_listing(folder: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(stem, "part/name size")`` for every file in the part folders of one category folder, sorted.

    Names and sizes only (one ``stat`` per file, nothing is read): what a run's fingerprint digests to
    notice that the files of a category changed. Hidden files are left out, as the readers do.
    """
    out: list[tuple[str, str]] = []
    base = Path(folder)
    with os.scandir(base) as parts:
        part_names = sorted(e.name for e in parts if not e.name.startswith(".") and _is_dir(e, base))
    for part in part_names:
        with os.scandir(base / part) as it:
            for entry in it:
                if entry.name.startswith(".") or not _is_file(entry, base / part):
                    continue
                stem = os.path.splitext(entry.name)[0]
                out.append((stem, f"{part}/{entry.name} {entry.stat().st_size}"))
    return sorted(out)


def _entry_kind(entry: os.DirEntry[str], folder: Path, test: str) -> bool:
    """``entry.is_file()`` or ``entry.is_dir()``; a link that loops or an entry that cannot be read is an
    error naming it (``DirEntry`` raises ``OSError`` for those)."""
    try:
        return bool(getattr(entry, test)())
    except OSError as exc:
        raise DatasetError(
            f"{folder / entry.name}: cannot be read as a file or folder ({exc.strerror or exc}); a symbolic "
            "link that points to itself or to a missing place does this: remove or repair it."
        ) from exc


def _is_file(entry: os.DirEntry[str], folder: Path) -> bool:
    return _entry_kind(entry, folder, "is_file")


def _is_dir(entry: os.DirEntry[str], folder: Path) -> bool:
    return _entry_kind(entry, folder, "is_dir")


def _list_folder(folder: Path, suffixes: frozenset[str]) -> dict[str, str]:
    """Map stem -> file name for the files of ``folder`` (hidden files ignored)."""
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: folder not found. Download BAPPS with `spips-bench download bapps --root DIR` "
            "(by default --split val: 2AFC val and JND, what `run --split val` reads) or point --root at the "
            "folder that holds 2afc/ and jnd/."
        )
    found: dict[str, str] = {}
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith(".") or not _is_file(entry, folder):
                continue
            stem, suffix = os.path.splitext(entry.name)
            problem = sample_problem(stem)
            if problem is not None:
                raise DatasetError(
                    f"{str(folder / entry.name)!r}: this file name cannot name a sample ({problem}); BAPPS names "
                    "its files 000000.png, 000001.png, ...: rename or remove it."
                )
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


def _pair_by_name(base: Path, parts: dict[str, frozenset[str]], *, keep_unpaired: bool = False,
                  ) -> tuple[list[str], dict[str, list[str | None]], str | None]:
    """List each part folder of ``base``; return the sorted stems, file names per part and a pairing error.

    Without ``keep_unpaired`` the stems are those present in every part and unpaired names raise. With
    it, every stem found in any part is returned (``None`` where a part lacks it), together with the
    message that would have been raised (``None`` when everything pairs up).
    """
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
    if not every:
        raise DatasetError(f"{base}: the folders {', '.join(parts)} are empty; re-extract the archive.")
    message = None
    if problems:
        message = ("BAPPS files are paired by name and these do not pair up: " + "; ".join(problems)
                   + ". Re-extract the archive or remove the unpaired files.")
        if not keep_unpaired:
            raise DatasetError(message)
    names = sorted(every)
    return names, {part: [listing.get(n) for n in names] for part, listing in listings.items()}, message


def read_judgment(path: str | os.PathLike[str]) -> float:
    """Read one BAPPS judgment file: a ``.npy`` holding a single finite float in [0, 1].

    Only the header is parsed before the shape and dtype are checked: a file that declares any shape
    but a scalar or one element, or an object (pickled) dtype, is refused without reading its data.

    Raises:
        DatasetError: the file is unreadable or truncated, holds more or fewer than one value, objects,
            a non-number, or a value outside [0, 1].
    """
    p = Path(path)
    # The header is read and checked before any data: a header that declares a huge shape must not make
    # numpy allocate it, and an object array (a pickle) is never unpickled.
    try:
        with p.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
            if dtype.hasobject:
                raise ValueError("it holds Python objects, which are never unpickled")
            data = fh.read(dtype.itemsize) if math.prod(shape) == 1 else b""
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(
            f"{p}: not a readable .npy judgment file ({exc}); re-extract the archive."
        ) from exc
    if math.prod(shape) != 1:
        raise DatasetError(f"{p}: a judgment file must hold exactly one value, found shape {shape}; "
                           "re-extract the archive.")
    if dtype.kind not in "fiu":
        raise DatasetError(f"{p}: judgment of dtype {dtype} is not a number; re-extract the archive.")
    if len(data) != dtype.itemsize:
        raise DatasetError(f"{p}: truncated .npy judgment file (its value is missing); re-extract the archive.")
    value = float(np.frombuffer(data, dtype=dtype)[0])
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DatasetError(f"{p}: judgment {value!r} is not a finite fraction in [0, 1]; "
                           "re-extract the archive or remove this item.")
    return value


class _SampleProblem(Exception):
    """A file of one sample cannot be used: the file and the error that says why."""

    def __init__(self, path: Path, error: Exception) -> None:
        super().__init__(str(error))
        self.path = path
        self.error = error

    def record(self) -> dict[str, str]:
        reason = str(self.error)
        prefix = f"{self.path}: "  # the readers' messages start with the file, which has its own field
        return {"file": str(self.path), "reason": reason.removeprefix(prefix),
                "error": type(self.error).__name__}


def decode_parts(files: Mapping[str, Path], load_size: int | None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Decode the image of each part of one sample: float32 ``(H, W, 3)`` arrays by part, and the conversions
    made (``"part: what"``); a file that cannot be read raises :class:`_SampleProblem` naming it."""
    arrays: dict[str, np.ndarray] = {}
    conversions: list[str] = []
    for part, path in files.items():
        try:
            loaded = read_image(path, load_size)
        except ImageReadError as exc:
            raise _SampleProblem(path, exc) from exc
        if loaded.conversion is not None:
            conversions.append(f"{part}: {loaded.conversion}")
        arrays[part] = loaded.array
    return arrays, conversions


class _PairedFolders(Dataset[dict[str, Any]]):
    """Items made of image parts and one judgment part, all sharing a stem."""

    #: The judgment kind the reader reads (its folders, judgment part and scored pairs).
    kind: JudgmentKind
    _image_parts: tuple[str, ...] = ()
    _judgment_part: str = ""
    _kind: str = ""

    def __init__(self, root: str | os.PathLike[str], split: str, category: str,
                 load_size: int | None = 64, *, report_problems: bool = False,
                 min_size: tuple[str, int] | None = None, categories: Sequence[str] | None = None,
                 dataset: str = "BAPPS", cache: bool = False) -> None:
        if load_size is not None and (isinstance(load_size, bool) or not isinstance(load_size, int)
                                      or load_size < 1):
            raise ValueError(f"load_size must be a positive int or None (native size), got {load_size!r}.")
        if categories is None:
            resolve_categories(self._kind, split, [category])
        elif category not in categories:
            raise ValueError(f"{dataset} {self._kind} {split} has no category {category!r}; choose from "
                             f"{', '.join(categories)}." + did_you_mean(category, categories))
        self.dataset = dataset
        self.min_size = min_size
        self.root = Path(root)
        self.split = split
        self.category = category
        self.load_size = load_size
        self.folder = self.root / self._kind / split / category
        if not self.folder.is_dir() and categories is not None:
            raise DatasetError(f"{self.folder}: {dataset} {self._kind} {split}/{category} not found; point the "
                               f"root at the folder that holds {self._kind}/.")
        if not self.folder.is_dir():
            raise DatasetError(
                f"{self.folder}: BAPPS {self._kind} {split}/{category} not found. Download it with "
                f"`spips-bench download bapps --split {split} --root {self.root}`"
                + (" (2AFC val and JND, what `run --split val` reads)" if split == "val" else "")
                + ", or pass the folder that holds 2afc/ and jnd/."
            )
        self.report_problems = report_problems
        parts = {p: IMAGE_SUFFIXES for p in self._image_parts}
        parts[self._judgment_part] = frozenset({JUDGMENT_SUFFIX})
        self.names, self._files, self.pairing_error = _pair_by_name(
            self.folder, parts, keep_unpaired=report_problems)
        self.cache = cache
        self._patches: PatchCache | None = None
        self._cache_checked = False

    def __len__(self) -> int:
        return len(self.names)

    def _parts(self) -> tuple[str, ...]:
        return (*self._image_parts, self._judgment_part)

    def path(self, index: int, part: str) -> Path:
        """The file of ``part`` (e.g. ``"p0"``) for item ``index``."""
        filename = self._files[part][index]
        if filename is None:  # an unpaired name, kept with report_problems=True
            suffix = JUDGMENT_SUFFIX if part == self._judgment_part else ".png"
            return self.folder / part / (self.names[index] + suffix)
        return self.folder / part / filename

    @property
    def image_parts(self) -> tuple[str, ...]:
        """The parts that are images (``ref``, ``p0``, ``p1`` for 2AFC)."""
        return self._image_parts

    @property
    def judgment_part(self) -> str:
        """The part that holds the judgments (``judge`` for 2AFC, ``same`` for JND)."""
        return self._judgment_part

    @property
    def kind_name(self) -> str:
        """The judgment kind's name (``"2afc"``, ``"jnd"``): the first folder under the root."""
        return self._kind

    def filename(self, index: int, part: str) -> str | None:
        """The file name of ``part`` for item ``index``; None for a name that lacks it (unpaired)."""
        return self._files[part][index]

    def use_cache(self, *, workers: int = 0, progress: bool = False) -> bool:
        """Read the patches from the decoded-patch cache (:mod:`spips_bench.data.cache`), building it first
        when it is absent or its source files changed; True when the cache is used.

        Items are the same, bit for bit, as without the cache. Called once; later calls (and the first
        item of a reader built with ``cache=True``) return the first answer.

        Args:
            workers: DataLoader worker processes that decode while the cache is built.
            progress: a progress bar on stderr while it is built.
        """
        if not self._cache_checked:
            from spips_bench.data.cache import open_cache

            self._cache_checked = True
            self._patches = open_cache(self, workers=workers, progress=progress)
        return self._patches is not None

    @property
    def cache_state(self) -> str:
        """``"off"`` (not asked for or not possible), ``"built"`` (decoded now) or ``"reused"``."""
        if self._patches is None:
            return "off"
        return "reused" if self._patches.reused else "built"

    def unpaired(self) -> list[str]:
        """Names that lack a file in some part (only ever non-empty with ``report_problems=True``)."""
        return [n for i, n in enumerate(self.names) if any(self._files[p][i] is None for p in self._parts())]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items in {self.folder}")
        index %= len(self)
        if self.cache and not self._cache_checked:
            self.use_cache()
        try:
            item = self._cached(index) if self._patches is not None else None
            if item is None:
                item = self._load(index)
            self._check_min_size(index, item)
            return item
        except _SampleProblem as problem:
            if not self.report_problems:
                raise problem.error from None
            return {"name": self.names[index], "problem": problem.record()}

    def _check_min_size(self, index: int, item: dict[str, Any]) -> None:
        """Raise :class:`_SampleProblem` for an image of item ``index`` below ``min_size``."""
        if self.min_size is None:
            return
        metric, size = self.min_size
        for part in self._image_parts:
            h, w = item[part].shape[-2:]
            if min(h, w) < size:
                path = self.path(index, part)
                raise _SampleProblem(path, DatasetError(
                    f"{path}: {w}x{h} px, smaller than the {size}x{size} px that metric {metric!r} needs; pass "
                    f"a load size (e.g. --load-size 64) to resize every patch, or leave {metric!r} out of "
                    "--metrics"))

    def _read(self, index: int) -> tuple[dict[str, np.ndarray], float, list[str]]:
        """Decode item ``index``: float32 ``(H, W, 3)`` arrays per image part, the judgment and the
        conversions made; a file that cannot be used raises :class:`_SampleProblem`."""
        missing = [p for p in self._parts() if self._files[p][index] is None]
        if missing:
            present = self.path(index, next(p for p in self._parts() if p not in missing))
            absent = " and no ".join(str(self.path(index, p)) for p in missing)
            raise _SampleProblem(present, DatasetError(
                f"{present}: unpaired: no {absent}; restore the missing file(s) or remove the others of "
                "this name"))
        arrays, conversions = decode_parts({part: self.path(index, part) for part in self._image_parts},
                                           self.load_size)
        sizes = {part: a.shape[1::-1] for part, a in arrays.items()}  # (width, height)
        first = self._image_parts[0]
        for part, size in sizes.items():
            if size != sizes[first]:
                # Only possible at the native size: a metric compares images of one size.
                odd, other = self.path(index, part), self.path(index, first)
                raise _SampleProblem(odd, DatasetError(
                    f"{odd}: {size[0]}x{size[1]} px, but {first}/{other.name} is "
                    f"{sizes[first][0]}x{sizes[first][1]} px; the images of one sample must have one size "
                    "at the native load size. Pass a load size (e.g. --load-size 64) to resize them, or "
                    "replace the file"))
        path = self.path(index, self._judgment_part)
        try:
            value = read_judgment(path)
        except DatasetError as exc:
            raise _SampleProblem(path, exc) from exc
        return arrays, value, conversions

    def decode(self, index: int) -> tuple[dict[str, np.ndarray], float, list[str]] | None:
        """What :meth:`_read` gives, or None for a sample whose files cannot be used (what the cache stores)."""
        try:
            return self._read(index)
        except _SampleProblem:
            return None

    def _item(self, index: int, images: dict[str, torch.Tensor], value: float, conversions: list[str],
              ) -> dict[str, Any]:
        item: dict[str, Any] = dict(images)
        item[self._judgment_part] = torch.tensor(value, dtype=torch.float32)
        item["name"] = self.names[index]
        item["conversions"] = conversions
        item["files"] = {part: str(self.path(index, part)) for part in self._image_parts}
        return item

    def _load(self, index: int) -> dict[str, Any]:
        """Read item ``index`` from its files; a file that cannot be used raises :class:`_SampleProblem`."""
        arrays, value, conversions = self._read(index)
        images = {part: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for part, a in arrays.items()}
        return self._item(index, images, value, conversions)

    def _cached(self, index: int) -> dict[str, Any] | None:
        """Item ``index`` from the patch cache; None when it is not cached there (read it from its files)."""
        assert self._patches is not None
        try:
            found = self._patches.sample(index, self._image_parts, self._judgment_part)
        except (OSError, ValueError) as exc:  # rebuilt by another run meanwhile: read the files instead
            print(f"notice: the patch cache {self._patches.folder} changed while this run read it ({exc}); "
                  f"reading {self.folder} from its files.", file=sys.stderr)
            self._patches = None
            return None
        if found is None:
            return None
        arrays, value, conversions = found
        return self._item(index, {part: torch.from_numpy(a) for part, a in arrays.items()}, value, conversions)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"category={self.category!r}, load_size={self.load_size}, items={len(self)})")


class TwoAFCDataset(_PairedFolders):
    """BAPPS two-alternative forced choice triplets of ``root/2afc/{split}/{category}``.

    Each item is a dict: ``"ref"``, ``"p0"``, ``"p1"`` are ``(3, H, W)`` float32 tensors in [0, 1]
    (``H = W = load_size``, or the stored size when ``load_size`` is None); ``"judge"`` is a float32
    scalar tensor, the fraction of raters who preferred p1 (0 = all chose p0); ``"name"`` is the file
    stem (e.g. ``"000123"``); ``"conversions"`` lists any conversion made (EXIF orientation, grayscale,
    RGBA, 16-bit, float); ``"files"`` maps each image part to its file.

    Args:
        root: folder holding ``2afc/`` (the official archives' ``dataset/``).
        split: ``"train"`` or ``"val"``.
        category: one of ``TWO_AFC_CATEGORIES[split]`` (or of ``categories``).
        load_size: side in pixels of the PIL bilinear resize (BAPPS protocol: 64); None keeps the
            stored size (the three images of a triplet must then have one size).
        report_problems: keep unpaired names and return a ``{"name", "problem"}`` item for a sample
            that cannot be used instead of raising (see the module docstring); ``pairing_error`` then
            holds the message that unpaired names would have raised.
        min_size: ``(metric, px)``: an item with an image whose side (after loading) is below ``px`` is
            a problem that names the metric (what the runner passes at the native load size).
        categories: the category names of a dataset other than BAPPS in this layout (None: BAPPS's,
            and only BAPPS's split names).
        dataset: the dataset's title in the messages.

    Raises:
        ValueError: unknown split or category, or a bad load_size.
        DatasetError: the folder is missing, or its files do not pair up by name (without
            ``report_problems``); indexing: a bad judgment file, images of different native sizes, or
            an image below ``min_size``.
        ImageReadError: indexing: an image that is missing, empty, unreadable, truncated or not an image.
    """

    kind = TWO_AFC
    _image_parts = TWO_AFC.image_parts
    _judgment_part = TWO_AFC.judgment_column
    _kind = TWO_AFC.name


class JNDDataset(_PairedFolders):
    """BAPPS just-noticeable-difference pairs of ``root/jnd/{split}/{category}`` (split ``"val"`` only).

    Each item is a dict: ``"p0"``, ``"p1"`` are ``(3, H, W)`` float32 tensors in [0, 1]; ``"same"`` is
    a float32 scalar tensor, the fraction of raters who judged the two patches identical; ``"name"``
    ``"conversions"`` and ``"files"`` as in :class:`TwoAFCDataset`.

    Args:
        root: folder holding ``jnd/``.
        split: ``"val"``.
        category: one of ``JND_CATEGORIES``.
        load_size: as in :class:`TwoAFCDataset`.
    """

    kind = JND
    _image_parts = JND.image_parts
    _judgment_part = JND.judgment_column
    _kind = JND.name


def reader_for(kind: str | JudgmentKind) -> type[TwoAFCDataset] | type[JNDDataset]:
    """The reader class of one judgment kind: :class:`TwoAFCDataset` or :class:`JNDDataset`.

    Raises:
        ValueError: a kind that no reader of this module reads.
    """
    readers = {cls.kind.name: cls for cls in (TwoAFCDataset, JNDDataset)}
    return readers[judgment_kind(kind, tuple(readers)).name]


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of dataset items into a batch for ``DataLoader(collate_fn=collate)``.

    Tensors are stacked along a new first dimension (images ``(N, 3, H, W)``, judgments ``(N,)``);
    ``"name"`` becomes a list of N stems, ``"conversions"`` a list of N lists and ``"files"`` a list of
    N dicts. Items that carry a ``"problem"`` (datasets built with ``report_problems=True``) are left out
    of the stacks and listed under ``"problems"`` as ``{"name", "file", "reason", "error"}``; that key is
    present only when some item has a problem, and a batch of problems only has ``"name": []`` besides it.

    Items whose images differ in size from the batch's (only possible at the native load size) cannot
    be stacked with it: they are listed under ``"problems"`` too, not resized, so that every score is
    the one the sample gets on its own. The batch's size is the one most of its items have (the first
    item's on a tie); ``--batch-size 1`` or a load size scores samples of every size.

    Raises:
        ValueError: an empty batch, or items with different keys.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    problems = [{"name": item["name"], **item["problem"]} for item in batch if "problem" in item]
    good = [item for item in batch if "problem" not in item]
    if good:
        keys = good[0].keys()
        for item in good[1:]:
            if item.keys() != keys:
                raise ValueError(
                    f"cannot collate items with different keys: {sorted(keys)} vs {sorted(item.keys())}"
                )
        tensor_keys = [k for k in keys if isinstance(good[0][k], torch.Tensor)]

        def shapes(item: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
            return tuple(tuple(item[k].shape) for k in tensor_keys)

        counts: dict[tuple[tuple[int, ...], ...], int] = {}
        for item in good:
            counts[shapes(item)] = counts.get(shapes(item), 0) + 1
        common = max(counts, key=lambda s: counts[s])  # max keeps the first of equal counts
        if len(counts) > 1:
            problems += [_size_problem(item, tensor_keys, common) for item in good if shapes(item) != common]
            good = [item for item in good if shapes(item) == common]
    if problems:
        rest: dict[str, Any] = _stack(good) if good else {"name": []}
        rest["problems"] = problems
        return rest
    return _stack(good)


def _size_problem(item: dict[str, Any], tensor_keys: list[str], common: tuple[tuple[int, ...], ...],
                  ) -> dict[str, str]:
    """The ``"problems"`` entry of an item whose tensors do not have the batch's shapes."""
    key, shape, want = next((k, tuple(item[k].shape), c) for k, c in zip(tensor_keys, common, strict=True)
                            if tuple(item[k].shape) != c)
    files = item.get("files") or {}
    file = str(files.get(key, item.get("name", "?"))) if isinstance(files, dict) else str(item.get("name"))

    def px(s: tuple[int, ...]) -> str:
        return f"{s[-1]}x{s[-2]} px" if len(s) >= 2 else f"shape {s}"

    return {"name": item.get("name", "?"), "file": file,
            "reason": (f"{key} is {px(shape)}, but the other samples of its batch are {px(want)}; images of "
                       "different sizes cannot be scored in one batch at the native load size. Pass "
                       "--batch-size 1 to score every sample at its own size, or a load size (e.g. "
                       "--load-size 64) to resize them"),
            "error": "DatasetError"}


def _stack(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items of one set of keys and shapes (checked by :func:`collate`)."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else list(values)
    return out
