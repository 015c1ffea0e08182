"""Mean-opinion-score datasets in their official layouts: label files, pairing by name, listings.

Each dataset gives every distorted image one quality score on its own scale (higher = better) and
names its reference in the file name. Three layouts are read as their archives unpack::

    TID2013     ROOT/mos_with_names.txt                 lines "5.51429 i01_01_1.bmp" (MOS 0-9)
                ROOT/reference_images/I01.BMP           reference "I" + the first name field
                ROOT/distorted_images/i01_01_1.bmp      NAME = REF_TYPE_LEVEL
    KADID-10k   ROOT/dmos.csv                           header dist_img,ref_img,dmos,var (DMOS 1-5)
                ROOT/images/I01.png, I01_01_01.png      references and distorted images in one folder
    PIPAL       ROOT/Train_Label/*.txt                  lines "A0001_00_00.bmp,1523.23" (Elo)
                ROOT/Train_Ref/A0001.bmp                reference = the first name field
                ROOT/Train_Dis/A0001_00_00.bmp

File and folder names are matched case-insensitively (the TID2013 archive mixes ``I01.BMP`` and
``i01_01_1.bmp``), and a file is also found under another image extension with the same stem. The
category of a sample is its distortion type, the middle field of its name (``"01"``); the sample id is
the distorted file's stem as the label file spells it (``"i01_01_1"``).

Nothing here imports torch: the registry reads the categories and listings through :class:`MOSSource`,
and :class:`spips_bench.data.mos_reader.MOSReader` decodes the images.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spips_bench.data.cards import load_card
from spips_bench.errors import DatasetError, did_you_mean

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
_NAME = re.compile(r"^([^_\s]+)_([^_\s]+)_([^_\s]+)$")  # REF_TYPE_LEVEL
_SHOW = 5  # how many names a message lists

__all__ = ["LAYOUTS", "MOSLayout", "MOSSample", "MOSSource", "label_entries"]


@dataclass(frozen=True)
class LabelEntry:
    """One line of a label file: a distorted image, its reference and its score."""

    name: str  # the distorted file's stem as the label file spells it
    dist_file: str  # the distorted file's name as the label file spells it
    ref_stem: str  # the reference's stem (matched case-insensitively)
    ref_file: str | None  # the reference's file name when the label file gives it (KADID-10k)
    category: str
    score: float
    score_text: str  # the score as written, for the listing
    where: str  # "FILE:LINE"


@dataclass(frozen=True)
class MOSSample:
    """A label entry resolved against the disk.

    Attributes:
        name: the sample id (the distorted file's stem as the label file spells it).
        category: its distortion type code.
        score: its quality score on the dataset's scale (higher = better).
        dist, ref: the files, or where they were expected when ``missing`` names them.
        missing: the parts (``"dist"``, ``"ref"``) whose file is not on the disk.
        where: ``"FILE:LINE"`` of its label entry.
        score_text: the score as the label file writes it.
    """

    name: str
    category: str
    score: float
    dist: Path
    ref: Path
    missing: tuple[str, ...]
    where: str
    score_text: str

    def file(self, part: str) -> Path:
        """The file of an image part: ``"dist"`` or ``"ref"`` (the MOS kind's image parts)."""
        files = {"dist": self.dist, "ref": self.ref}
        if part not in files:
            raise KeyError(f"a MOS sample has the image parts dist and ref, not {part!r}")
        return files[part]


@dataclass(frozen=True)
class MOSLayout:
    """Where a layout keeps its labels and images, and how its label files are read.

    Attributes:
        name: ``"tid2013"``, ``"kadid10k"`` or ``"pipal"``.
        labels: the label file, or for a folder of label files (PIPAL) the folder, relative to the root.
        dist_folder, ref_folder: the folders of the distorted and reference images.
        example: the layout in one line, for messages.
        parse: reads one label file into entries (raises DatasetError naming FILE:LINE).
    """

    name: str
    labels: str
    labels_are_folder: bool
    dist_folder: str
    ref_folder: str
    example: str
    parse: Callable[[Path], list[LabelEntry]]


def _split_name(file: str, where: str, line: str, fix: str) -> tuple[str, str, str, str]:
    """``(stem, ref field, type, level)`` of a distorted file name like ``i01_01_1.bmp``."""
    stem, suffix = os.path.splitext(file)
    match = _NAME.match(stem)
    if match is None or suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(f"{where}: {file!r} is not a distorted image name REF_TYPE_LEVEL.EXT (e.g. {fix}) in "
                           f"line {line!r}; correct or remove the line.")
    return stem, match.group(1), match.group(2), match.group(3)


def _score(text: str, where: str, line: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}: score {text!r} is not a number in line {line!r}; correct or remove the "
                           "line.") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: score {text!r} is not finite in line {line!r}; every image needs a finite "
                           "score: correct or remove the line.")
    return value


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a text label file ({exc}); re-extract the archive.") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions or "
                           "re-extract the archive.") from exc
    if not text.strip():
        raise DatasetError(f"{path}: the label file is empty; re-extract the archive.")
    return text.splitlines()


def _parse_tid2013(path: Path) -> list[LabelEntry]:
    out = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) != 2:
            raise DatasetError(f"{where}: expected 'SCORE NAME' (e.g. '5.51429 i01_01_1.bmp'), got line {line!r}; "
                               "correct or remove the line.")
        score = _score(fields[0], where, line)
        stem, ref, kind, _ = _split_name(fields[1], where, line, "i01_01_1.bmp")
        ref_stem = "I" + ref[1:] if ref[:1] in "iI" else "I" + ref
        out.append(LabelEntry(stem, fields[1], ref_stem, None, kind, score, fields[0], where))
    return out


_KADID_COLUMNS = ("dist_img", "ref_img", "dmos")


def _parse_kadid(path: Path) -> list[LabelEntry]:
    lines = _read_lines(path)
    header = [h.strip() for h in next(csv.reader([lines[0]]))]
    missing = [c for c in _KADID_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path}:1: the header {lines[0]!r} lacks the column(s) {', '.join(missing)}; expected "
                           "'dist_img,ref_img,dmos,var': re-extract the archive.")
    col = {c: header.index(c) for c in _KADID_COLUMNS}
    out = []
    for number, row in enumerate(csv.reader(lines[1:]), start=2):
        line = lines[number - 1]
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if len(row) != len(header):
            raise DatasetError(f"{where}: {len(row)} field(s) where the header has {len(header)} in line {line!r}; "
                               "correct or remove the line.")
        dist, ref = row[col["dist_img"]].strip(), row[col["ref_img"]].strip()
        score = _score(row[col["dmos"]].strip(), where, line)
        stem, _, kind, _ = _split_name(dist, where, line, "I01_01_01.png")
        ref_stem, suffix = os.path.splitext(ref)
        if not ref_stem or suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"{where}: reference {ref!r} is not an image file name in line {line!r}; correct "
                               "or remove the line.")
        out.append(LabelEntry(stem, dist, ref_stem, ref, kind, score, row[col["dmos"]].strip(), where))
    return out


def _parse_pipal(path: Path) -> list[LabelEntry]:
    out = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            raise DatasetError(f"{where}: expected 'NAME,SCORE' (e.g. 'A0001_00_00.bmp,1523.23'), got line "
                               f"{line!r}; correct or remove the line.")
        score = _score(fields[1], where, line)
        stem, ref, kind, _ = _split_name(fields[0], where, line, "A0001_00_00.bmp")
        out.append(LabelEntry(stem, fields[0], ref, None, kind, score, fields[1], where))
    return out


#: The official layouts by name.
LAYOUTS: Mapping[str, MOSLayout] = {
    "tid2013": MOSLayout("tid2013", "mos_with_names.txt", False, "distorted_images", "reference_images",
                         "ROOT/mos_with_names.txt, ROOT/reference_images/I01.BMP, ROOT/distorted_images/i01_01_1.bmp",
                         _parse_tid2013),
    "kadid10k": MOSLayout("kadid10k", "dmos.csv", False, "images", "images",
                          "ROOT/dmos.csv, ROOT/images/I01.png (references), ROOT/images/I01_01_01.png (distorted)",
                          _parse_kadid),
    "pipal": MOSLayout("pipal", "Train_Label", True, "Train_Dis", "Train_Ref",
                       "ROOT/Train_Label/*.txt, ROOT/Train_Ref/A0001.bmp, ROOT/Train_Dis/A0001_00_00.bmp",
                       _parse_pipal),
}


def _find(folder: Path, name: str) -> Path | None:
    """The entry of ``folder`` called ``name``, compared case-insensitively (an exact match first)."""
    exact = folder / name
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    key = name.casefold()
    with os.scandir(folder) as it:
        found = sorted(e.name for e in it if e.name.casefold() == key)
    return folder / found[0] if found else None


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


class _FolderIndex:
    """The image files of one folder by lower-case name and lower-case stem (one scan)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.by_name: dict[str, str] = {}
        self.by_stem: dict[str, str] = {}
        if folder is None or not folder.is_dir():
            return
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if not e.name.startswith("."))
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in IMAGE_SUFFIXES:
                self.by_name.setdefault(name.casefold(), name)
                self.by_stem.setdefault(stem.casefold(), name)

    def find(self, file: str | None, stem: str) -> str | None:
        if file is not None and file.casefold() in self.by_name:
            return self.by_name[file.casefold()]
        return self.by_stem.get(stem.casefold())


def label_entries(root: Path, layout: MOSLayout) -> list[LabelEntry]:
    """Every label entry under ``root``, sorted by sample id; the label files must exist.

    Raises:
        DatasetError: a label file is missing, empty or unreadable, a line is malformed (named as
            FILE:LINE with the line), a score is not finite, or two entries name one image.
    """
    out: list[LabelEntry] = []
    for path in _label_files(root, layout):
        out += layout.parse(path)
    seen: dict[str, LabelEntry] = {}
    for entry in out:
        key = entry.name.casefold()
        if key in seen:
            raise DatasetError(f"{entry.where}: {entry.dist_file!r} is listed twice (first at {seen[key].where}); "
                               "keep one of the lines.")
        seen[key] = entry
    return sorted(out, key=lambda e: e.name)


def _label_files(root: Path, layout: MOSLayout) -> list[Path]:
    found = _find(root, layout.labels)
    if found is None:
        raise DatasetError(f"{root / layout.labels}: not found (layout: {layout.example}).")
    if not layout.labels_are_folder:
        return [found]
    with os.scandir(found) as it:
        files = sorted(found / e.name for e in it if not e.name.startswith(".") and e.name.lower().endswith(".txt"))
    if not files:
        raise DatasetError(f"{found}: no label files (*.txt) in this folder; re-extract the archive "
                           f"(layout: {layout.example}).")
    return files


class MOSSource:
    """One MOS dataset as its card describes it: where its labels and images are, and what they hold.

    The parsed label files are cached per root and per the label files' modification times and sizes.

    Args:
        card: the dataset's card (``spips_bench/data/cards/<name>.toml``); its ``layout`` key picks one of
            :data:`LAYOUTS`.
    """

    def __init__(self, card: Mapping[str, Any]) -> None:
        self.name: str = card["name"]
        self.title: str = card["title"]
        self.synthetic = bool(card.get("synthetic", False))
        self.generated = bool(card.get("generated", False))
        self.layout = LAYOUTS[card["layout"]]
        self.distortions: dict[str, str] = dict(card.get("distortions", {}))
        self.download: str = card.get("download", "")
        self.steps: list[str] = list(card.get("steps", []))
        self._parsed: dict[Path, tuple[tuple[Any, ...], list[LabelEntry]]] = {}

    @classmethod
    def from_card(cls, name: str) -> MOSSource:
        """The source of the card ``name`` (``"tid2013"``, ``"kadid10k"``, ``"pipal"``, ``"mos-demo"``)."""
        return cls(load_card(name))

    # -- facts ---------------------------------------------------------------------------------------

    def category_title(self, code: str) -> str:
        """The display name of distortion type ``code`` (``"01"`` -> ``"additive Gaussian noise"``); a code
        the card does not name is shown as ``"type <code>"``."""
        return self.distortions.get(code, f"type {code}")

    def report_title(self, split: str, label: str) -> str:
        """The tables' title: the title, the split unless it is ``"all"``, and ``(label)`` when synthetic."""
        title = self.title if split == "all" else f"{self.title} {split}"
        return f"{title} ({label})" if self.synthetic else title

    def default_root(self) -> Path:
        """``./datasets/<name>`` (a generated set: its cache folder)."""
        if self.generated:
            from spips_bench.data.mos_demo import default_mos_demo_root

            return default_mos_demo_root()
        return Path.cwd() / "datasets" / self.name

    # -- the disk ------------------------------------------------------------------------------------

    def has_labels(self, root: Path) -> bool:
        """Whether the label file (or folder) is under ``root``."""
        return _find(Path(root), self.layout.labels) is not None

    def entries(self, root: Path) -> list[LabelEntry]:
        """The label entries under ``root`` (see :func:`label_entries`), cached while the files are unchanged."""
        base = Path(root).resolve()
        files = _label_files(base, self.layout)
        key = tuple((f, *_stat_key(f)) for f in files)
        cached = self._parsed.get(base)
        if cached is None or cached[0] != key:
            cached = (key, label_entries(base, self.layout))
            self._parsed[base] = cached
        return cached[1]

    def categories(self, root: Path) -> list[str]:
        """The distortion types that the label file names, sorted; ``[]`` when there is no label file."""
        if not self.has_labels(root):
            return []
        return sorted({e.category for e in self.entries(root)})

    def check_category(self, root: Path, category: str) -> None:
        """Raise ValueError naming the valid types when ``category`` is not one of the label file's."""
        known = self.categories(root)
        if category not in known:
            raise ValueError(f"{self.title} has no distortion type {category!r} under {root}; choose from "
                             f"{', '.join(known) or 'none'}." + did_you_mean(category, known))

    def samples(self, root: Path, category: str) -> list[MOSSample]:
        """The samples of one distortion type, sorted by id, each resolved to its files on the disk."""
        base = Path(root)
        self.check_category(base, category)
        dist_index = _FolderIndex(_find(base, self.layout.dist_folder))
        ref_index = (dist_index if self.layout.ref_folder == self.layout.dist_folder
                     else _FolderIndex(_find(base, self.layout.ref_folder)))
        out = []
        for e in self.entries(base):
            if e.category != category:
                continue
            dist = dist_index.find(e.dist_file, e.name)
            ref = ref_index.find(e.ref_file, e.ref_stem)
            missing = tuple(p for p, f in (("dist", dist), ("ref", ref)) if f is None)
            ref_guess = e.ref_file or e.ref_stem + os.path.splitext(e.dist_file)[1]
            out.append(MOSSample(
                name=e.name, category=e.category, score=e.score,
                dist=(dist_index.folder or base / self.layout.dist_folder) / (dist or e.dist_file),
                ref=(ref_index.folder or base / self.layout.ref_folder) / (ref or ref_guess),
                missing=missing, where=e.where, score_text=e.score_text))
        return out

    def listing(self, root: Path, category: str) -> list[tuple[str, str]]:
        """``(sample, "relative/path size")`` for the distorted image and the reference of every sample of
        one type, and ``(sample, "LABELS: score")`` for its label entry, sorted.

        Names and sizes only (one ``stat`` per file; nothing is decoded): what a run's fingerprint digests
        to notice that the data changed. The label entry is listed with its score, not the whole label
        file's size, so that editing another type's line leaves this type's digest alone. A missing file
        is listed as ``"... missing"``.
        """
        base = Path(root).resolve()
        out = []
        for s in self.samples(base, category):
            for part, path in (("dist", s.dist), ("ref", s.ref)):
                size = "missing" if part in s.missing else str(path.stat().st_size)
                out.append((s.name, f"{_relative(path, base)} {size}"))
            out.append((s.name, f"{_relative(Path(s.where.rsplit(':', 1)[0]), base)}: {s.score_text}"))
        return sorted(out)

    def locate(self, root: Path | None) -> Path:
        """The resolved root (``root``, or :meth:`default_root`), checked to hold the label file and the
        image folders; a generated set is generated there first when absent.

        Raises:
            DatasetError: the label file or an image folder is missing; the message gives the layout and
                the steps to get the data.
        """
        if self.generated:
            from spips_bench.data.mos_demo import ensure_mos_demo

            return ensure_mos_demo(root).resolve()
        base = Path(root).expanduser() if root is not None else self.default_root()
        lacking = [base / name for name in dict.fromkeys((self.layout.labels, self.layout.ref_folder,
                                                           self.layout.dist_folder)) if _find(base, name) is None]
        if lacking:
            steps = " ".join(f"{i}. {s}" for i, s in enumerate(self.steps, start=1))
            raise DatasetError(f"{lacking[0]}: not found, so {base} holds no {self.title} data (expected layout: "
                               f"{self.layout.example}). To get it: {steps} Or point --root at the folder that "
                               f"holds {self.layout.labels}.")
        return base.resolve()


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()
