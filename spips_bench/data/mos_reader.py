"""The reader of one distortion type of a MOS dataset: distorted image, reference and score per item.

Items are decoded in ``__getitem__`` (DataLoader workers do the decoding), at the native size unless a
load size is given. With ``report_problems=True`` (what the runner uses) a sample that cannot be used
does not raise: its item is ``{"name": ..., "problem": {"file", "reason", "error"}}``, the form of the
BAPPS readers, which :func:`spips_bench.data.bapps.collate` moves to the batch's ``"problems"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from spips_bench.data.bapps import _SampleProblem, decode_parts
from spips_bench.data.mos import MOSSample, MOSSource
from spips_bench.errors import DatasetError
from spips_bench.stats.kinds import MOS, JudgmentKind

_SHOW = 5  # how many unpaired names a message lists

__all__ = ["MOSReader"]


class MOSReader(Dataset[dict[str, Any]]):
    """The samples of one distortion type of a MOS dataset (TID2013, KADID-10k, PIPAL, the MOS demo).

    Each item is a dict: ``"dist"`` and ``"ref"`` are ``(3, H, W)`` float32 tensors in [0, 1] (the
    stored size when ``load_size`` is None, else ``load_size x load_size``); ``"mos"`` is a float32
    scalar tensor, the sample's score on the dataset's scale (higher = better: MOS, DMOS or Elo);
    ``"name"`` is the sample id (the distorted file's stem as the label file spells it, e.g.
    ``"i01_01_1"``); ``"conversions"`` lists any conversion made while decoding; ``"files"`` maps
    ``"dist"`` and ``"ref"`` to their files.

    Args:
        root: the dataset's root (the folder that holds its label file).
        source: the dataset (:meth:`MOSSource.from_card`).
        category: a distortion type code that the label file names (e.g. ``"01"``).
        load_size: side in pixels of a square bilinear resize; None (the default) keeps the stored size.
        report_problems: keep label entries whose files are missing and return a ``{"name", "problem"}``
            item for a sample that cannot be used instead of raising; ``pairing_error`` then holds the
            message that the missing files would have raised.
        min_size: ``(metric, px)``: an item with an image whose smaller side is below ``px`` is a problem
            that names the metric.

    Raises:
        ValueError: a type the label file does not name, or a bad load size.
        DatasetError: a bad label file (see :func:`spips_bench.data.mos.label_entries`), or (without
            ``report_problems``) label entries whose image files are missing; indexing: images of one
            sample with different sizes, or an image below ``min_size``.
        ImageReadError: indexing: an image that is empty, unreadable, truncated or not an image.
    """

    kind: JudgmentKind = MOS
    image_parts: tuple[str, ...] = MOS.image_parts
    judgment_part: str = MOS.judgment_column

    def __init__(self, root: str | os.PathLike[str], source: MOSSource, category: str,
                 load_size: int | None = None, *, report_problems: bool = False,
                 min_size: tuple[str, int] | None = None) -> None:
        if load_size is not None and (isinstance(load_size, bool) or not isinstance(load_size, int)
                                      or load_size < 1):
            raise ValueError(f"load_size must be a positive int or None (native size), got {load_size!r}.")
        self.root = Path(root)
        self.folder = self.root
        self.source = source
        self.dataset = source.title
        self.category = category
        self.load_size = load_size
        self.report_problems = report_problems
        self.min_size = min_size
        self.samples: list[MOSSample] = source.samples(self.root, category)
        self.names = [s.name for s in self.samples]
        self.pairing_error = self._pairing_message()
        if self.pairing_error is not None and not report_problems:
            raise DatasetError(self.pairing_error)

    def _pairing_message(self) -> str | None:
        unpaired = [s for s in self.samples if s.missing]
        if not unpaired:
            return None
        shown = "; ".join(f"{s.name} ({s.where}: no " + " and no ".join(str(s.file(p)) for p in s.missing) + ")"
                          for s in unpaired[:_SHOW])
        more = f"; and {len(unpaired) - _SHOW} more" if len(unpaired) > _SHOW else ""
        entries = "label entry names an image file" if len(unpaired) == 1 else "label entries name image files"
        return (f"{self.dataset} type {self.category}: {len(unpaired)} {entries} "
                f"that are not on the disk: {shown}{more}. Restore the files (re-extract the "
                "archive) or remove their lines from the label file.")

    def __len__(self) -> int:
        return len(self.samples)

    def use_cache(self, *, workers: int = 0, progress: bool = False) -> bool:
        """Always False: MOS images are decoded from their files on every read (no decoded-patch cache;
        these sets are read once per run at their native size)."""
        return False

    @property
    def cache_state(self) -> str:
        """``"off"``: this reader has no cache."""
        return "off"

    def unpaired(self) -> list[str]:
        """Sample ids whose label entry names a missing file (only kept with ``report_problems=True``)."""
        return [s.name for s in self.samples if s.missing]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items of {self.dataset} type "
                             f"{self.category} in {self.folder}")
        sample = self.samples[index]
        try:
            return self._load(sample)
        except _SampleProblem as problem:
            if not self.report_problems:
                raise problem.error from None
            return {"name": sample.name, "problem": problem.record()}

    def _load(self, sample: MOSSample) -> dict[str, Any]:
        if sample.missing:
            part = sample.missing[0]
            path = sample.file(part)
            other = " (and its " + " and ".join(sample.missing[1:]) + ")" if len(sample.missing) > 1 else ""
            raise _SampleProblem(path, DatasetError(
                f"{path}: not found{other}; {sample.where} names this {'reference' if part == 'ref' else 'image'}: "
                "restore the file or remove the line"))
        arrays, conversions = decode_parts({part: sample.file(part) for part in self.image_parts}, self.load_size)
        (dh, dw), (rh, rw) = arrays["dist"].shape[:2], arrays["ref"].shape[:2]
        if (dh, dw) != (rh, rw):  # only possible at the native size
            raise _SampleProblem(sample.dist, DatasetError(
                f"{sample.dist}: {dw}x{dh} px, but its reference {sample.ref} is {rw}x{rh} px; a distorted image "
                "and its reference must have one size. Replace the wrong file, or pass a load size (e.g. "
                "--load-size 256) to resize both"))
        if self.min_size is not None:
            metric, px = self.min_size
            if min(dh, dw) < px:
                raise _SampleProblem(sample.dist, DatasetError(
                    f"{sample.dist}: {dw}x{dh} px, smaller than the {px}x{px} px that metric {metric!r} needs; pass "
                    f"a load size of at least {px} (e.g. --load-size {max(px, 256)}) to resize every image, or "
                    f"leave {metric!r} out of --metrics"))
        item: dict[str, Any] = {part: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
                                for part, a in arrays.items()}
        item[self.judgment_part] = torch.tensor(sample.score, dtype=torch.float32)
        item["name"] = sample.name
        item["conversions"] = conversions
        item["files"] = {part: str(sample.file(part)) for part in self.image_parts}
        return item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, dataset={self.dataset!r}, "
                f"category={self.category!r}, load_size={self.load_size}, items={len(self)})")
