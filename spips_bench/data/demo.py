"""A small synthetic set in the BAPPS layout, for demos and tests where BAPPS itself is absent.

The patches are real photographs (the images that ship inside the scikit-image wheel), cropped and
resized to 64 x 64 px, so the BAPPS loader's ``load_size=64`` leaves them unchanged. The distortions are
graded families chosen to resemble each BAPPS category, and the judgments are **synthetic**: simulated
raters who prefer the less distorted patch with a logistic probability of the strength difference.
They are not human judgments; numbers computed on this set say nothing about a metric's agreement with
people and must be labelled :data:`DEMO_LABEL` wherever they are shown.

Contents (version :data:`DEMO_VERSION`): 2AFC val, 60 triplets in each of the six categories (5 raters,
judgments in multiples of 0.2, as BAPPS val); 2AFC train, 100 triplets in each of traditional, cnn,
mix (2 raters, multiples of 0.5, as BAPPS train); JND val, 60 pairs in each of traditional, cnn
(3 raters). Generation is deterministic (one seed per item) and takes a few seconds.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spips_bench.errors import DatasetError
from spips_bench.io import replace_durably

DEMO_VERSION = 1
DEMO_LABEL = "synthetic judgments"
PATCH_SIZE = 64  # stored side in pixels: the BAPPS load_size, so loading does not resample
_MARGIN = 8  # extra pixels each side, so blur and shifts see real content at the patch border
_MARKER = ".spips-bench-demo.json"

TWO_AFC_SIZES: dict[str, dict[str, int]] = {
    "val": {c: 60 for c in ("traditional", "cnn", "superres", "deblur", "color", "frameinterp")},
    "train": {c: 100 for c in ("traditional", "cnn", "mix")},
}
JND_SIZES: dict[str, int] = {"traditional": 60, "cnn": 60}
RATERS = {"val": 5, "train": 2, "jnd": 3}

# scikit-image data that ship inside its wheel (no download); grayscale ones are replicated to RGB.
_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina",
            "stereo_motorcycle", "camera", "brick", "grass", "gravel")

_README = """\
spips-bench demo set, version {version}: {label}.

This folder has the BAPPS layout (2afc/{{train,val}}/CATEGORY/{{ref,p0,p1,judge}},
jnd/val/CATEGORY/{{p0,p1,same}}), but it is NOT BAPPS and its judgments are NOT human.
Patches: 64 x 64 px crops of the photographs shipped with scikit-image.
Distortions: graded synthetic families per category, at random strengths.
Judgments: fractions of simulated raters ({val} per 2AFC val triplet, {train} per train triplet, {jnd}
per JND pair) who prefer the less distorted patch (2AFC) or call the pair identical (JND), each with a
logistic probability of the distortion strengths. Scores computed here test the software, not
agreement with human perception; label them "{label}".
Regenerate with spips_bench.data.demo.ensure_demo(); the generation is deterministic.
"""

Image = np.ndarray  # (H, W, 3) float32 in [0, 1]
Distortion = Callable[[Image, float, np.random.Generator], Image]


def default_demo_root() -> Path:
    """``$SPIPS_BENCH_CACHE/demo-v{N}``, else ``$XDG_CACHE_HOME/spips-bench/...``, else ``~/.cache/...``."""
    from spips_bench.settings import cache_dir

    return cache_dir() / f"demo-v{DEMO_VERSION}"


# --- distortion families; strength t in [0, 1], 0 = untouched --------------------------------------

def _gaussian_noise(x: Image, t: float, rng: np.random.Generator) -> Image:
    return x + rng.normal(0.0, 0.15 * t, x.shape).astype(np.float32)


def _blur(x: Image, t: float, rng: np.random.Generator) -> Image:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(3.0 * t, 3.0 * t, 0.0))


def _jpeg(x: Image, t: float, rng: np.random.Generator) -> Image:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(_to_uint8(x)).save(buf, format="JPEG", quality=max(2, round(90 - 88 * t)),
                                          subsampling=2, optimize=False)
    buf.seek(0)
    with PILImage.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _contrast(x: Image, t: float, rng: np.random.Generator) -> Image:
    factor = 1.0 + (0.8 * t if rng.random() < 0.5 else -0.7 * t)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return mean + factor * (x - mean)


def _salt_pepper(x: Image, t: float, rng: np.random.Generator) -> Image:
    out = x.copy()
    hit = rng.random(x.shape[:2]) < 0.12 * t
    out[hit] = rng.integers(0, 2, size=(int(hit.sum()), 1)).astype(np.float32)
    return out


def _resample(x: Image, factor: float, down: str, up: str) -> Image:
    from PIL import Image as PILImage

    r = PILImage.Resampling
    filters = {"nearest": r.NEAREST, "bilinear": r.BILINEAR, "bicubic": r.BICUBIC}
    h, w = x.shape[:2]
    small = max(2, round(h / factor))
    im = PILImage.fromarray(_to_uint8(x)).resize((small, small), filters[down])
    return np.asarray(im.resize((w, h), filters[up]), dtype=np.float32) / 255.0


def _pixelate(x: Image, t: float, rng: np.random.Generator) -> Image:
    return _resample(x, 1.0 + 7.0 * t, "bilinear", "nearest")


def _superres(x: Image, t: float, rng: np.random.Generator) -> Image:
    up = ("nearest", "bilinear", "bicubic")[int(rng.integers(0, 3))]
    return _resample(x, 1.0 + 5.0 * t, "bicubic", up)


def _autoencoder(x: Image, t: float, rng: np.random.Generator) -> Image:
    # A stand-in for a small convolutional autoencoder's output: a random smooth kernel, a colour mix
    # and the 2-px checkerboard that transposed convolutions leave behind.
    from scipy.ndimage import convolve

    k = rng.random((5, 5)).astype(np.float32) ** (1.0 + 4.0 * t)
    k = (1 - t) * np.pad([[1.0]], 2).astype(np.float32) + t * k / k.sum()
    y = np.stack([convolve(x[..., c], k, mode="nearest") for c in range(3)], axis=-1)
    mix = np.eye(3, dtype=np.float32) + 0.1 * t * rng.normal(size=(3, 3)).astype(np.float32)
    y = y @ mix.T
    checker = (np.indices(x.shape[:2]).sum(axis=0) % 2 * 2 - 1).astype(np.float32)[..., None]
    return y + 0.08 * t * checker


def _quantise_denoise(x: Image, t: float, rng: np.random.Generator) -> Image:
    from scipy.ndimage import median_filter

    levels = max(3, round(32 - 28 * t))
    y = np.round(x * (levels - 1)) / (levels - 1)
    size = 1 + 2 * round(2 * t)
    return median_filter(y, size=(size, size, 1)) if size > 1 else y


def _deblur(x: Image, t: float, rng: np.random.Generator) -> Image:
    # Blur, then an over-eager unsharp mask: the halo and ringing of a deblurring method.
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(x, sigma=(0.5 + 2.0 * t, 0.5 + 2.0 * t, 0.0))
    detail = blurred - gaussian_filter(blurred, sigma=(1.5, 1.5, 0.0))
    return blurred + (0.5 + 3.0 * t * rng.random()) * detail


def _color(x: Image, t: float, rng: np.random.Generator) -> Image:
    gray = x.mean(axis=-1, keepdims=True)
    saturation = 1.0 + (0.9 * t if rng.random() < 0.5 else -0.9 * t)
    y = gray + saturation * (x - gray)
    gains = 1.0 + 0.3 * t * rng.uniform(-1.0, 1.0, size=3).astype(np.float32)
    gamma = float(np.exp(0.6 * t * rng.uniform(-1.0, 1.0)))
    return np.clip(y * gains, 0.0, 1.0) ** gamma


def _frameinterp(x: Image, t: float, rng: np.random.Generator) -> Image:
    # A badly interpolated frame: the patch blended with a copy moved along a random motion vector.
    shift = 1.0 + 6.0 * t
    angle = rng.uniform(0.0, 2 * np.pi)
    dy, dx = round(shift * np.sin(angle)), round(shift * np.cos(angle))
    moved = np.roll(x, (dy, dx), axis=(0, 1))
    return (1.0 - 0.5 * t) * x + 0.5 * t * moved


FAMILIES: dict[str, tuple[Distortion, ...]] = {
    "traditional": (_gaussian_noise, _blur, _jpeg, _contrast, _salt_pepper, _pixelate),
    "cnn": (_autoencoder, _quantise_denoise),
    "superres": (_superres,),
    "deblur": (_deblur,),
    "color": (_color,),
    "frameinterp": (_frameinterp,),
}
FAMILIES["mix"] = FAMILIES["traditional"] + FAMILIES["cnn"]


def _to_uint8(x: Image) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _load_sources() -> list[np.ndarray]:
    try:
        import skimage.data as skdata
    except ImportError as exc:  # scikit-image is a main dependency; a broken install is the only cause
        raise DatasetError("the demo set needs scikit-image (pip install 'scikit-image>=0.21').") from exc
    images = []
    for name in _SOURCES:
        img = getattr(skdata, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        images.append(np.ascontiguousarray(img[..., :3]))
    return images


def _crop(sources: list[np.ndarray], rng: np.random.Generator) -> Image:
    """A random square region, resized to PATCH_SIZE + 2 * _MARGIN px; flat regions are skipped."""
    from PIL import Image as PILImage

    side_out = PATCH_SIZE + 2 * _MARGIN

    def region() -> Image:
        img = sources[int(rng.integers(0, len(sources)))]
        h, w = img.shape[:2]
        side = int(rng.integers(side_out, min(h, w, 3 * side_out) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        im = PILImage.fromarray(img[y:y + side, x:x + side])
        im = im.resize((side_out, side_out), PILImage.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.float32) / 255.0

    patch = region()
    for _ in range(50):  # bounded: almost every crop of these photographs has texture
        if patch.std() > 0.05:
            break
        patch = region()
    return patch


def _distort(base: Image, category: str, t: float, rng: np.random.Generator) -> np.ndarray:
    families = FAMILIES[category]
    family = families[int(rng.integers(0, len(families)))]
    out = family(base, t, rng)
    m = _MARGIN
    return _to_uint8(out[m:m + PATCH_SIZE, m:m + PATCH_SIZE])


def _raters(p: float, n: int, rng: np.random.Generator) -> float:
    """Fraction of ``n`` simulated raters saying yes, each with probability ``p`` plus rater noise."""
    logit = np.log(p / (1.0 - p)) + rng.normal(0.0, 0.5, size=n)
    return float(np.mean(rng.random(n) < 1.0 / (1.0 + np.exp(-logit))))


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image as PILImage

    # Fixed encoder settings and no metadata: the bytes depend on the pixels only.
    PILImage.fromarray(arr, "RGB").save(path, format="PNG", compress_level=1, optimize=False)


def _save_judgment(path: Path, value: float) -> None:
    np.save(path, np.array([value], dtype=np.float32), allow_pickle=False)


def _item_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([DEMO_VERSION, *key]))


def _write_2afc(root: Path, split: str, sources: list[np.ndarray]) -> None:
    for ci, (category, n) in enumerate(TWO_AFC_SIZES[split].items()):
        folder = root / "2afc" / split / category
        for part in ("ref", "p0", "p1", "judge"):
            (folder / part).mkdir(parents=True)
        for i in range(n):
            rng = _item_rng(0 if split == "val" else 1, ci, i)
            base = _crop(sources, rng)
            s0, s1 = rng.uniform(0.05, 1.0, size=2)
            name = f"{i:06d}"
            m = _MARGIN
            _save_png(folder / "ref" / f"{name}.png", _to_uint8(base[m:m + PATCH_SIZE, m:m + PATCH_SIZE]))
            _save_png(folder / "p0" / f"{name}.png", _distort(base, category, float(s0), rng))
            _save_png(folder / "p1" / f"{name}.png", _distort(base, category, float(s1), rng))
            # A rater prefers p1 more often the more strongly p0 is distorted than p1.
            p_prefer_p1 = 1.0 / (1.0 + np.exp(-6.0 * (s0 - s1)))
            _save_judgment(folder / "judge" / f"{name}.npy", _raters(p_prefer_p1, RATERS[split], rng))


def _write_jnd(root: Path, sources: list[np.ndarray]) -> None:
    for ci, (category, n) in enumerate(JND_SIZES.items()):
        folder = root / "jnd" / "val" / category
        for part in ("p0", "p1", "same"):
            (folder / part).mkdir(parents=True)
        for i in range(n):
            rng = _item_rng(2, ci, i)
            base = _crop(sources, rng)
            strength = float(rng.uniform(0.0, 0.4))
            name = f"{i:06d}"
            m = _MARGIN
            _save_png(folder / "p0" / f"{name}.png", _to_uint8(base[m:m + PATCH_SIZE, m:m + PATCH_SIZE]))
            _save_png(folder / "p1" / f"{name}.png", _distort(base, category, strength, rng))
            # "Identical" becomes unlikely past a just-noticeable strength of about 0.12.
            p_same = 1.0 / (1.0 + np.exp(25.0 * (strength - 0.12)))
            p_same = min(max(p_same, 1e-3), 1 - 1e-3)
            _save_judgment(folder / "same" / f"{name}.npy", _raters(p_same, RATERS["jnd"], rng))


def _manifest() -> dict[str, object]:
    return {"version": DEMO_VERSION, "label": DEMO_LABEL, "patch_size": PATCH_SIZE,
            "2afc": TWO_AFC_SIZES, "jnd": {"val": JND_SIZES}, "raters": RATERS}


def marker_matches(marker: Path, manifest: dict[str, object]) -> bool:
    """Whether the marker file of a generated set holds ``manifest`` (as JSON): the set is complete and of
    this generator's version and settings. A missing or unreadable marker is False."""
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == json.loads(json.dumps(manifest))
    except (OSError, ValueError):
        return False


def _is_complete(root: Path) -> bool:
    return marker_matches(root / _MARKER, _manifest())


def is_demo_set(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a spips-bench demo set (of any version): its marker file is there.

    The runner labels scores of such a folder "synthetic judgments" whatever ``--dataset`` says.
    """
    return (Path(root) / _MARKER).is_file()


def generate_demo(target: str | os.PathLike[str]) -> Path:
    """Write the demo set into the new folder ``target`` (which must not exist) and return it."""
    root = Path(target)
    if root.exists():
        raise FileExistsError(f"{root}: already exists; generate_demo writes only into a new folder.")
    sources = _load_sources()
    root.mkdir(parents=True)
    _write_2afc(root, "val", sources)
    _write_2afc(root, "train", sources)
    _write_jnd(root, sources)
    (root / "README.txt").write_text(
        _README.format(version=DEMO_VERSION, label=DEMO_LABEL, val=RATERS["val"], train=RATERS["train"],
                       jnd=RATERS["jnd"]), encoding="utf-8")
    # Written last: its presence means every file above is complete.
    (root / _MARKER).write_text(json.dumps(_manifest(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return root


def ensure_generated(target: Path, generate: Callable[[Path], Path], *, marker: str,
                     complete: Callable[[Path], bool], what: str) -> Path:
    """Return ``target`` holding a complete generated set, generating it if needed (both demo sets).

    A set that ``complete`` accepts is reused as is. Otherwise ``generate(folder)`` writes the set into a
    temporary folder beside ``target``, which is then moved into place, so an interrupted generation never
    leaves a half-written set; an incomplete or older set at ``target`` (it has the file ``marker``) is
    swapped out and deleted. Two processes generating at once: the one that finishes second keeps the
    other's complete set.

    Raises:
        DatasetError: ``target`` exists, is not empty and is not such a set (nothing is deleted); ``what``
            names the set in the message.
    """
    if complete(target):
        return target
    if target.exists() and not (target / marker).is_file():
        if not target.is_dir() or any(target.iterdir()):
            raise DatasetError(f"{target}: exists and is not a {what}; choose another folder (--root) or "
                               "remove it.")
        target.rmdir()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        built = generate(tmp / "set")
        if target.exists():  # an older or incomplete set (it has the marker): swap it out, then delete it
            replace_durably(target, tmp / "old")
        try:
            replace_durably(built, target)
        except OSError:
            if not complete(target):  # not a concurrent generator that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_demo(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the root of a complete demo set (holding ``2afc/`` and ``jnd/``), generating it if needed.

    A complete set of the same :data:`DEMO_VERSION` is reused as is. Otherwise the set is generated
    into a temporary folder beside ``root`` and renamed into place, so an interrupted generation never
    leaves a half-written set; an older demo version at ``root`` is replaced (:func:`ensure_generated`).

    Args:
        root: where the set lives; default :func:`default_demo_root` (``$SPIPS_BENCH_CACHE/demo-v1`` or
            ``~/.cache/spips-bench/demo-v1``).

    Raises:
        DatasetError: ``root`` exists, is not empty and is not a demo set (nothing is deleted).
    """
    target = Path(root) if root is not None else default_demo_root()
    return ensure_generated(target, generate_demo, marker=_MARKER, complete=_is_complete,
                            what="spips-bench demo set")
