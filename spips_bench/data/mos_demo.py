"""Small MOS sets in the official layouts, from real photographs, with simulated observers' scores.

:func:`write_mos_layout` writes a set in the layout of TID2013, KADID-10k or PIPAL (the TID2013 one
with the mixed-case file names of its archive). The references are photographs that ship inside the
scikit-image wheel (those of :mod:`spips_bench.data.demo`), cropped to 4:3 and resized; the distortions
are graded families of that module (Gaussian noise, blur, JPEG, contrast, impulse noise, pixelation);
the scores are **synthetic**: the mean of simulated observers who rate a distorted image lower the
stronger its distortion, each with rater noise.

:func:`ensure_mos_demo` generates the ``mos-demo`` set on first use: the KADID-10k layout, version
:data:`MOS_DEMO_VERSION`, 6 references x 5 types x 5 levels = 150 distorted images of 224 x 168 px
(large enough for every metric of the zoo at the native size, MS-SSIM's five scales included),
DMOS-like scores in [1, 5] from 20 simulated observers. It is labelled :data:`MOS_DEMO_LABEL`
wherever its numbers are shown.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from spips_bench.data.demo import DEMO_LABEL, FAMILIES, _load_sources, _to_uint8, ensure_generated, marker_matches

MOS_DEMO_VERSION = 1
MOS_DEMO_LABEL = DEMO_LABEL
_MARKER = ".spips-bench-mos-demo.json"
#: The distortion families in type-code order ("01" = Gaussian noise, ...): the card mos-demo.toml names them.
TYPES = FAMILIES["traditional"]
#: Per type, the strength at which a simulated observer's quality falls to half (lower = more visible).
_HALF_QUALITY = (0.45, 0.5, 0.6, 0.7, 0.4, 0.55)
#: Each layout's scale: (worst, best, decimals) of its scores.
SCALES: dict[str, tuple[float, float, int]] = {"tid2013": (0.0, 9.0, 5), "kadid10k": (1.0, 5.0, 2),
                                               "pipal": (1000.0, 1800.0, 4)}
# The demo set: 224 x 168 px (KADID-10k's 4:3) keeps the smaller side above every zoo metric's min_size
# and gives MS-SSIM its five standard scales (161 px), while scoring every offline metric on it stays
# within a minute on two cores (VIF and VIFp take most of it).
DEMO_REFERENCES, DEMO_TYPES, DEMO_LEVELS, DEMO_RATERS = 6, 5, 5, 20
DEMO_SIZE = (224, 168)  # (width, height)

_README = """\
spips-bench MOS demo set, version {version}: {label}.

This folder has the KADID-10k layout (dmos.csv with dist_img,ref_img,dmos,var; images/I01.png and
images/I01_01_01.png), but it is NOT KADID-10k and its scores are NOT human.
References: {references} photographs shipped with scikit-image, cropped to 4:3 and resized to {w} x {h} px.
Distortions: {types} graded families (the card mos-demo.toml names them) at {levels} levels.
Scores: the mean of {raters} simulated observers on a 1-5 scale (higher = better), each rating lower the
stronger the distortion, with rater noise. Scores computed here test the software, not agreement with
human perception; label them "{label}".
Regenerate with spips_bench.data.mos_demo.ensure_mos_demo(); the generation is deterministic.
"""


def default_mos_demo_root() -> Path:
    """``$SPIPS_BENCH_CACHE/mos-demo-v{N}``, else ``$XDG_CACHE_HOME/spips-bench/...``, else ``~/.cache/...``."""
    from spips_bench.settings import cache_dir

    return cache_dir() / f"mos-demo-v{MOS_DEMO_VERSION}"


def _references(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``n`` photographs as float32 ``(h, w, 3)`` in [0, 1]: central 4:3 crops resized to ``size = (w, h)``."""
    from PIL import Image

    sources = _load_sources()
    if not 1 <= n <= len(sources):
        raise ValueError(f"references must be between 1 and {len(sources)} (the photographs shipped with "
                         f"scikit-image), got {n}.")
    w, h = size
    out = []
    for img in sources[:n]:
        ih, iw = img.shape[:2]
        cw, ch = (iw, round(iw * h / w)) if iw * h <= ih * w else (round(ih * w / h), ih)
        y, x = (ih - ch) // 2, (iw - cw) // 2
        im = Image.fromarray(img[y:y + ch, x:x + cw]).resize((w, h), Image.Resampling.LANCZOS)
        out.append(np.asarray(im, dtype=np.float32) / 255.0)
    return out


def _observers(t: float, half: float, raters: int, rng: np.random.Generator) -> np.ndarray:
    """Ratings in [0, 1] (1 = no visible distortion) of ``raters`` simulated observers for strength ``t``,
    of a distortion whose quality falls to half at strength ``half``."""
    quality = 1.0 / (1.0 + (t / half) ** 2)
    return np.clip(quality + rng.normal(0.0, 0.08, size=raters), 0.0, 1.0)


def _save(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    fmt = "BMP" if path.suffix.lower() == ".bmp" else "PNG"
    options = {"compress_level": 1, "optimize": False} if fmt == "PNG" else {}
    Image.fromarray(_to_uint8(pixels), "RGB").save(path, format=fmt, **options)


def write_mos_layout(root: str | os.PathLike[str], layout: str, *, references: int = 2, types: int = 2,
                     levels: int = 2, size: tuple[int, int] = (64, 48), raters: int = 10, seed: int = 0,
                     ) -> dict[str, float]:
    """Write a small set in an official layout into ``root`` and return its scores.

    Args:
        root: the folder to write into (created; files of the same names are overwritten).
        layout: ``"tid2013"`` (``mos_with_names.txt``, ``reference_images/I01.BMP``,
            ``distorted_images/i01_01_1.bmp``, every other distorted file name in upper case as in the
            official archive), ``"kadid10k"`` (``dmos.csv``, ``images/I01.png``, ``images/I01_01_01.png``)
            or ``"pipal"`` (``Train_Label/A0001.txt``, ``Train_Ref/A0001.bmp``, ``Train_Dis/A0001_00_00.bmp``;
            type and level codes from 00).
        references: how many photographs (1 to 11).
        types: how many distortion types (1 to 6, in the order of :data:`TYPES`).
        levels: strengths per type; level ``l`` of ``L`` has strength ``l / L``.
        size: ``(width, height)`` of every image in pixels.
        raters: simulated observers per image.
        seed: the generation's seed (the output is a function of the arguments).

    Returns:
        Sample id (the distorted file's stem as the label file spells it) -> its score as written, on the
        layout's scale (:data:`SCALES`; higher = better).
    """
    if layout not in SCALES:
        raise ValueError(f"unknown MOS layout {layout!r}; choose one of {', '.join(SCALES)}.")
    if not 1 <= types <= len(TYPES) or levels < 1 or raters < 1:
        raise ValueError(f"need 1 <= types <= {len(TYPES)}, levels >= 1 and raters >= 1; got {types}, {levels}, "
                         f"{raters}.")
    base = Path(root)
    folders = {"tid2013": ("reference_images", "distorted_images"), "kadid10k": ("images", "images"),
               "pipal": ("Train_Ref", "Train_Dis")}[layout]
    for folder in folders:
        (base / folder).mkdir(parents=True, exist_ok=True)
    worst, best, decimals = SCALES[layout]
    scores: dict[str, float] = {}
    lines: dict[str, list[str]] = {}
    for r, ref in enumerate(_references(references, size), start=1):
        if layout == "tid2013":
            ref_file, stem_of = f"I{r:02d}.BMP", (lambda k, lv, r=r: f"i{r:02d}_{k:02d}_{lv}")
        elif layout == "kadid10k":
            ref_file, stem_of = f"I{r:02d}.png", (lambda k, lv, r=r: f"I{r:02d}_{k:02d}_{lv:02d}")
        else:
            ref_file, stem_of = f"A{r:04d}.bmp", (lambda k, lv, r=r: f"A{r:04d}_{k - 1:02d}_{lv - 1:02d}")
        _save(base / folders[0] / ref_file, ref)
        for k in range(1, types + 1):
            # How visible this type is on this photograph (its content masks some distortions more).
            masking = np.random.default_rng(np.random.SeedSequence([seed, r, k])).normal(0.0, 0.1)
            half = _HALF_QUALITY[k - 1] * float(np.exp(masking))
            for lv in range(1, levels + 1):
                rng = np.random.default_rng(np.random.SeedSequence([seed, r, k, lv]))
                t = lv / levels
                _save_distorted(base, layout, folders[1], stem_of(k, lv), TYPES[k - 1](ref, t, rng), k, lv)
                ratings = worst + (best - worst) * _observers(t, half, raters, rng)
                value = round(float(ratings.mean()), decimals)
                name = stem_of(k, lv)
                scores[name] = value
                text = f"{value:.{decimals}f}"
                if layout == "tid2013":
                    lines.setdefault("mos_with_names.txt", []).append(f"{text} {name}.bmp")
                elif layout == "kadid10k":
                    var = f"{float(ratings.var(ddof=1)) if raters > 1 else 0.0:.4f}"
                    lines.setdefault("dmos.csv", ["dist_img,ref_img,dmos,var"]).append(
                        f"{name}.png,{ref_file},{text},{var}")
                else:
                    lines.setdefault(f"Train_Label/A{r:04d}.txt", []).append(f"{name}.bmp,{text}")
    for rel, content in lines.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text("\n".join(content) + "\n", encoding="utf-8")
    return scores


def _save_distorted(base: Path, layout: str, folder: str, stem: str, pixels: np.ndarray, k: int, lv: int) -> None:
    if layout == "tid2013":
        # The official archive mixes cases; the label file spells every name in lower case.
        name = f"{stem}.bmp" if (k + lv) % 2 == 0 else f"{stem.upper()}.BMP"
    else:
        name = f"{stem}.png" if layout == "kadid10k" else f"{stem}.bmp"
    _save(base / folder / name, pixels)


def _manifest() -> dict[str, object]:
    return {"version": MOS_DEMO_VERSION, "label": MOS_DEMO_LABEL, "layout": "kadid10k",
            "references": DEMO_REFERENCES, "types": DEMO_TYPES, "levels": DEMO_LEVELS, "size": list(DEMO_SIZE),
            "raters": DEMO_RATERS}


def _is_complete(root: Path) -> bool:
    return marker_matches(root / _MARKER, _manifest())


def is_mos_demo(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a spips-bench MOS demo set (of any version): its marker file is there."""
    return (Path(root) / _MARKER).is_file()


def generate_mos_demo(target: str | os.PathLike[str]) -> Path:
    """Write the MOS demo set into the new folder ``target`` (which must not exist) and return it."""
    root = Path(target)
    if root.exists():
        raise FileExistsError(f"{root}: already exists; generate_mos_demo writes only into a new folder.")
    write_mos_layout(root, "kadid10k", references=DEMO_REFERENCES, types=DEMO_TYPES, levels=DEMO_LEVELS,
                     size=DEMO_SIZE, raters=DEMO_RATERS, seed=MOS_DEMO_VERSION)
    (root / "README.txt").write_text(_README.format(
        version=MOS_DEMO_VERSION, label=MOS_DEMO_LABEL, w=DEMO_SIZE[0], h=DEMO_SIZE[1], references=DEMO_REFERENCES,
        types=DEMO_TYPES, levels=DEMO_LEVELS, raters=DEMO_RATERS), encoding="utf-8")
    # Written last: its presence means every file above is complete.
    (root / _MARKER).write_text(json.dumps(_manifest(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return root


def ensure_mos_demo(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the root of a complete MOS demo set, generating it if needed (a few seconds).

    A complete set of the same :data:`MOS_DEMO_VERSION` is reused as is. Otherwise the set is generated
    into a temporary folder beside ``root`` and moved into place, so an interrupted generation never
    leaves a half-written set; an incomplete or older set at ``root`` (it has the marker) is replaced.

    Args:
        root: where the set lives; default :func:`default_mos_demo_root`.

    Raises:
        DatasetError: ``root`` exists, is not empty and is not a MOS demo set (nothing is deleted).
    """
    target = Path(root).expanduser() if root is not None else default_mos_demo_root()
    return ensure_generated(target, generate_mos_demo, marker=_MARKER, complete=_is_complete,
                            what="spips-bench MOS demo set")
