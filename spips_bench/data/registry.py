"""Datasets as the runner sees them: the :class:`Dataset` type and the registry of datasets.

A dataset says what it is (``name``, ``title``, whether its judgments are ``synthetic``), which judgment
kinds and splits it has, which categories each (kind, split) holds, where its root is by default, what
of it is on the disk, and how to build the reader of one category. BAPPS and the demo set are the first
two entries; their static facts are the cards ``spips_bench/data/cards/*.toml`` (read without torch).

Other datasets plug in through the entry-point group ``spips_bench.datasets``; the object an entry
point names is a :class:`Dataset` subclass (or instance)::

    [project.entry-points."spips_bench.datasets"]
    my-set = "my_package:MySet"

A plugin's data has the paired-folder layout of BAPPS, with categories of its own::

    ROOT/2afc/SPLIT/CATEGORY/{ref,p0,p1,judge}/NAME.png | NAME.npy
    ROOT/jnd/SPLIT/CATEGORY/{p0,p1,same}/NAME.png | NAME.npy

Its categories are read from the disk (the folders present, in name order). A plugin that cannot be
loaded is reported by :func:`dataset_problems` (and ``spips-bench list --datasets``), not fatal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any

from spips_bench.data.cards import load_card
from spips_bench.errors import DatasetError, did_you_mean
from spips_bench.stats.kinds import KINDS, JudgmentKind, judgment_kind

ENTRY_POINT_GROUP = "spips_bench.datasets"
#: The judgment kinds a dataset may have (those of :mod:`spips_bench.stats.kinds`, which the readers of
#: :mod:`spips_bench.data.bapps` read).
READER_KINDS = tuple(KINDS)
#: The ``--dataset`` value that picks BAPPS when it is present and the demo set otherwise.
AUTO = "auto"

__all__ = [
    "AUTO",
    "ENTRY_POINT_GROUP",
    "MOS_CARDS",
    "REGISTRY",
    "Bapps",
    "Dataset",
    "DatasetRegistry",
    "Demo",
    "MOSSet",
    "dataset_names",
    "dataset_problems",
    "get_dataset",
    "load_card",
]



class Dataset:
    """A dataset of judgments in the paired-folder layout, as the runner uses it.

    Subclass it and set the class attributes; the methods read the categories from the disk. BAPPS
    (:class:`Bapps`) overrides them with the fixed names of its card.

    Attributes:
        name: the registry name, what ``run --dataset`` takes (lower case).
        title: what the tables are titled (the split is added, and "(synthetic judgments)" when
            ``synthetic``).
        synthetic: the judgments are not human (simulated raters, generated data); the tables say so.
        kinds: the judgment kinds it has: names among :data:`READER_KINDS` or
            :class:`~spips_bench.stats.kinds.JudgmentKind` objects (``TWO_AFC``, ``JND``).
        splits: per kind, the splits it has; a kind missing here has the split ``"val"`` only.
        description, citation, download: one line each, for ``spips-bench list --datasets``.
    """

    name: str = ""
    title: str = ""
    synthetic: bool = False
    kinds: tuple[str | JudgmentKind, ...] = ("2afc",)
    splits: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    description: str = ""
    citation: str = ""
    download: str = ""
    #: Who provides it: ``"builtin"`` or the plugin's distribution (set by the registry).
    source: str = "builtin"

    # -- facts ---------------------------------------------------------------------------------------

    def judgment_kinds(self) -> list[JudgmentKind]:
        """The kind objects of :attr:`kinds`, in its order."""
        return [judgment_kind(k) for k in self.kinds]

    def kind_names(self) -> list[str]:
        """The names of :attr:`kinds` (``"2afc"``, ``"jnd"``), in its order."""
        return [k.name for k in self.judgment_kinds()]

    def kind_splits(self, kind: str) -> tuple[str, ...]:
        """The splits of ``kind`` (``("val",)`` unless :attr:`splits` says otherwise)."""
        return tuple(self.splits.get(str(kind), ("val",)))

    def kinds_of(self, split: str) -> list[str]:
        """The names of the kinds that have ``split``, in the order of :attr:`kinds`."""
        return [k for k in self.kind_names() if split in self.kind_splits(k)]

    def report_title(self, split: str) -> str:
        """The tables' title: ``"<title> <split>"``, with ``"(synthetic judgments)"`` when synthetic."""
        return f"{self.title or self.name} {split}" + (" (synthetic judgments)" if self.synthetic else "")

    # -- the disk ------------------------------------------------------------------------------------

    def default_root(self) -> Path:
        """Where the data is looked for when no ``--root`` is given: ``./datasets/<name>``."""
        return Path.cwd() / "datasets" / self.name

    def locate(self, root: Path | None) -> Path:
        """The resolved root of the data (``root``, or :meth:`default_root`), checked to hold some of it.

        A dataset that generates its data overrides this to write it when absent.

        Raises:
            DatasetError: no category folder of any kind is there.
        """
        base = Path(root).expanduser() if root is not None else self.default_root()
        kinds = self.kind_names()
        if not any(self.categories(base, k, s) for k in kinds for s in self.kind_splits(k)):
            looked = " and ".join(f"{base}/{k}/{'|'.join(self.kind_splits(k))}/<category>" for k in kinds)
            raise DatasetError(f"{base}: no {self.title or self.name} data here (looked for {looked}). "
                               + (f"{self.download}; or point --root at its folder." if self.download else
                                  "Point --root at the folder that holds " + ", ".join(f"{k}/" for k in kinds)
                                  + "."))
        return base.resolve()

    def categories(self, root: Path, kind: str, split: str) -> list[str]:
        """The categories of ``kind``/``split``: the folders under ``root/kind/split``, in name order."""
        folder = Path(root) / kind / split
        if not folder.is_dir():
            return []
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())

    def present(self, root: Path, split: str) -> dict[str, list[str]]:
        """The categories of ``split`` whose folders exist under ``root``, per kind that has the split."""
        return {k: [c for c in self.categories(root, k, split) if (Path(root) / k / split / c).is_dir()]
                for k in self.kinds_of(split)}

    def plan(self, root: Path, split: str, kinds: Sequence[str] | None, categories: Sequence[str] | None,
             ) -> list[tuple[str, str]]:
        """The ``(kind, category)`` pairs to score: every category of the kinds asked for (default: all
        kinds that have ``split``), or those named in ``categories``.

        Raises:
            ValueError: a kind it lacks or that lacks ``split``, or a category that no kind holds; the
                message names the valid ones.
        """
        have = self.kinds_of(split)
        for k in kinds or []:
            if k not in have:
                raise ValueError(f"dataset {self.name!r} has no {k} judgments for split {split!r}; choose from "
                                 f"{', '.join(have) or 'none'} (--kinds).")
        chosen = list(kinds or have)
        if not chosen:
            raise ValueError(f"dataset {self.name!r} has no split {split!r}; its splits: "
                             + ", ".join(sorted({s for k in self.kind_names() for s in self.kind_splits(k)})) + ".")
        known = {k: self.categories(root, k, split) for k in chosen}
        if not categories:
            return [(k, c) for k in chosen for c in known[k]]
        plan = [(k, c) for k in chosen for c in dict.fromkeys(categories) if c in known[k]]
        every = sorted({c for cs in known.values() for c in cs})
        for c in categories:
            if not any(c == pc for _, pc in plan):
                raise ValueError(f"dataset {self.name!r} {split} has no category {c!r}; choose from "
                                 f"{', '.join(every)}." + did_you_mean(c, every))
        return plan

    def reader(self, root: Path, kind: str, split: str, category: str, load_size: int | None,
               **options: Any) -> Any:
        """The torch ``Dataset`` of one category: :class:`~spips_bench.data.bapps.TwoAFCDataset` or
        :class:`~spips_bench.data.bapps.JNDDataset` over ``root/kind/split/category``.

        ``options`` go to the reader (``report_problems``, ``min_size``).

        Raises:
            ValueError: a kind this dataset lacks.
        """
        from spips_bench.data.bapps import reader_for

        names = self.kind_names()
        if str(kind) not in names:
            raise ValueError(f"dataset {self.name!r} has no {kind} judgments; it has {', '.join(names)}.")
        return reader_for(kind)(root, split, category, load_size, categories=self._reader_categories(root, kind, split),
                   dataset=self.title or self.name, **options)

    def _reader_categories(self, root: Path, kind: str, split: str) -> Sequence[str] | None:
        return self.categories(root, kind, split)

    def listing(self, root: Path, kind: str, split: str, category: str) -> list[tuple[str, str]]:
        """``(sample, "file size")`` for every file behind one category, sorted: names and sizes only,
        what a run's fingerprint digests to notice that the data changed (the paired-folder layout: every
        file under ``root/kind/split/category``)."""
        from spips_bench.data.bapps import category_listing

        return category_listing(Path(root) / kind / split / category)

    def check(self) -> None:
        """Raise ``TypeError`` when the declaration cannot work (what the registry reports for a plugin)."""
        if not self.name or self.name != self.name.strip().lower() or self.name == AUTO:
            raise TypeError(f"a dataset needs a lower-case name other than {AUTO!r}, got {self.name!r}")
        bad = [str(k) for k in self.kinds if str(k) not in READER_KINDS]
        if not self.kinds or bad:
            raise TypeError(f"dataset {self.name!r}: kinds must be among {', '.join(READER_KINDS)}, got "
                            f"{[str(k) for k in self.kinds]}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, source={self.source!r})"


class _Carded(Dataset):
    """A built-in dataset whose facts, fixed categories included, are its card."""

    card_name = ""

    def __init__(self) -> None:
        card = load_card(self.card_name)
        self.name = card["name"]
        self.title = card["title"]
        self.synthetic = bool(card["synthetic"])
        self.kinds = tuple(card["kinds"])
        self.splits = {k: tuple(v) for k, v in card["splits"].items()}
        self.description, self.citation, self.download = card["description"], card["citation"], card["download"]
        self.fixed: dict[str, dict[str, tuple[str, ...]]] = {
            k: {s: tuple(cs) for s, cs in by_split.items()} for k, by_split in card["categories"].items()}

    def categories(self, root: Path, kind: str, split: str) -> list[str]:
        """The card's categories of ``kind``/``split`` (fixed, whatever the disk holds)."""
        return list(self.fixed.get(kind, {}).get(split, ()))

    def present(self, root: Path, split: str) -> dict[str, list[str]]:
        """The card's categories of ``split`` whose folders exist under ``root``, per kind."""
        from spips_bench.data.bapps import present_categories

        return present_categories(root, split)

    def _reader_categories(self, root: Path, kind: str, split: str) -> Sequence[str] | None:
        return None  # the readers' own BAPPS names, with their messages


class Bapps(_Carded):
    """BAPPS (card ``bapps.toml``); its root is ``$SPIPS_BENCH_BAPPS`` or ``./datasets/bapps``."""

    card_name = "bapps"

    def default_root(self) -> Path:
        from spips_bench.settings import bapps_root

        return bapps_root()[0]

    def report_title(self, split: str) -> str:
        return f"BAPPS {split}"


class Demo(_Carded):
    """The synthetic demo set in the BAPPS layout (card ``demo.toml``), generated on first use."""

    card_name = "demo"

    def default_root(self) -> Path:
        from spips_bench.data.demo import default_demo_root

        return default_demo_root()

    def locate(self, root: Path | None) -> Path:
        """The resolved root of a complete demo set at ``root`` (None: the cache), generated if needed."""
        from spips_bench.data.demo import ensure_demo

        return ensure_demo(root).resolve()

    def report_title(self, split: str) -> str:
        from spips_bench.data.demo import DEMO_LABEL

        return f"Demo set ({DEMO_LABEL})"


class MOSSet(Dataset):
    """A built-in mean-opinion-score dataset read in its official layout (cards ``tid2013``, ``kadid10k``,
    ``pipal``, ``mos-demo``): one kind, ``mos``; one split (the card's); the distortion types that its
    label file names as categories.

    Attributes:
        mos: the :class:`spips_bench.data.mos.MOSSource` that reads the label file and finds the images.
        steps: the card's steps to get the data (what ``spips-bench download`` prints).
    """

    def __init__(self, card_name: str) -> None:
        from spips_bench.data.mos import MOSSource

        card = load_card(card_name)
        self.mos = MOSSource(card)
        self.name, self.title, self.synthetic = card["name"], card["title"], bool(card["synthetic"])
        self.kinds = tuple(card["kinds"])
        self.splits = {k: tuple(v) for k, v in card["splits"].items()}
        self.description, self.citation, self.download = card["description"], card["citation"], card["download"]
        self.steps: tuple[str, ...] = tuple(card.get("steps", ()))

    def category_title(self, code: str) -> str:
        """The display name of distortion type ``code`` from the card (unknown codes: ``"type <code>"``)."""
        return self.mos.category_title(code)

    def report_title(self, split: str) -> str:
        from spips_bench.data.demo import DEMO_LABEL

        return self.mos.report_title(split, DEMO_LABEL)

    def default_root(self) -> Path:
        return self.mos.default_root()

    def locate(self, root: Path | None) -> Path:
        return self.mos.locate(root)

    def categories(self, root: Path, kind: str, split: str) -> list[str]:
        """The distortion types that the label file under ``root`` names (``[]`` for another kind or split)."""
        return self.mos.categories(root) if split in self.kind_splits(str(kind)) else []

    def present(self, root: Path, split: str) -> dict[str, list[str]]:
        return {k: self.categories(root, k, split) for k in self.kinds_of(split)}

    def reader(self, root: Path, kind: str, split: str, category: str, load_size: int | None,
               **options: Any) -> Any:
        """The :class:`~spips_bench.data.mos_reader.MOSReader` of one distortion type (``options``:
        ``report_problems``, ``min_size``)."""
        from spips_bench.data.mos_reader import MOSReader

        kinds = self.kind_names()
        if str(kind) not in kinds or split not in self.kind_splits(str(kind)):
            have = "; ".join(f"{k} ({', '.join(self.kind_splits(k))})" for k in kinds)
            raise ValueError(f"dataset {self.name!r} has no {kind} judgments of split {split!r}; it has {have}.")
        return MOSReader(root, self.mos, category, load_size, **options)

    def listing(self, root: Path, kind: str, split: str, category: str) -> list[tuple[str, str]]:
        """See :meth:`spips_bench.data.mos.MOSSource.listing`: each sample's two images and its label entry."""
        return self.mos.listing(root, category)


#: The cards of the built-in MOS datasets, in the order ``spips-bench list --datasets`` shows them.
MOS_CARDS = ("tid2013", "kadid10k", "pipal", "mos-demo")


class DatasetRegistry:
    """The built-in datasets and those of the entry-point group :data:`ENTRY_POINT_GROUP` (loaded on first use)."""

    def __init__(self) -> None:
        self._datasets: dict[str, Dataset] = {}
        self._loaded = False
        #: entry-point name -> why the plugin was not loaded
        self.plugin_errors: dict[str, str] = {}

    def register(self, dataset: Dataset, *, overwrite: bool = False) -> Dataset:
        """Add ``dataset`` under its name.

        Raises:
            TypeError: a declaration that cannot work (:meth:`Dataset.check`).
            ValueError: the name is taken and ``overwrite`` is off.
        """
        dataset.check()
        if dataset.name in self._datasets and not overwrite:
            raise ValueError(f"dataset {dataset.name!r} is already registered "
                             f"({self._datasets[dataset.name].source})")
        self._datasets[dataset.name] = dataset
        return dataset

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for builtin in (Bapps(), Demo(), *(MOSSet(c) for c in MOS_CARDS)):
            self.register(builtin)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
            try:
                obj = ep.load()
                dataset = obj() if isinstance(obj, type) and issubclass(obj, Dataset) else obj
                if not isinstance(dataset, Dataset):
                    raise TypeError(f"entry point gave {type(obj).__name__}; expected a "
                                    "spips_bench.data.registry.Dataset subclass or instance")
                dataset.source = dist
                if dataset.name in self._datasets:
                    raise ValueError(f"name {dataset.name!r} is already taken by "
                                     f"{self._datasets[dataset.name].source}; plugin ignored")
                self.register(dataset)
            except Exception as exc:  # a broken plugin must not break the others; it is reported instead
                self.plugin_errors[ep.name] = f"{dist}: {type(exc).__name__}: {exc}"

    def names(self) -> list[str]:
        """Every registered name: the built-ins first, then the plugins in name order."""
        self._ensure_loaded()
        builtin = [n for n, d in self._datasets.items() if d.source == "builtin"]
        return builtin + sorted(n for n in self._datasets if n not in builtin)

    def get(self, name: str) -> Dataset:
        """The dataset called ``name``.

        Raises:
            ValueError: no such dataset; the message lists them, suggests the closest and names any
                plugin that failed to load.
        """
        self._ensure_loaded()
        key = name.strip().lower()
        if key in self._datasets:
            return self._datasets[key]
        broken = "".join(f" Plugin {n!r} was not loaded: {e}." for n, e in sorted(self.plugin_errors.items()))
        raise ValueError(f"unknown dataset {name!r}; choose {AUTO!r} or one of {', '.join(self.names())} "
                         f"(`spips-bench list --datasets`).{did_you_mean(key, self.names())}{broken}")


#: The process-wide registry behind :func:`get_dataset`.
REGISTRY = DatasetRegistry()


def get_dataset(name: str) -> Dataset:
    """The registered dataset ``name`` (``"bapps"``, ``"demo"`` or a plugin's); see :meth:`DatasetRegistry.get`."""
    return REGISTRY.get(name)


def dataset_names() -> list[str]:
    """Every registered dataset name."""
    return REGISTRY.names()


def dataset_problems() -> dict[str, str]:
    """Plugins of :data:`ENTRY_POINT_GROUP` that could not be loaded: entry-point name -> why."""
    REGISTRY.names()
    return dict(REGISTRY.plugin_errors)
