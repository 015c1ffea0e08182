"""BAPPS readers: pairing by name, judgment and image validation, conversions, batching, streaming."""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spips_bench.data.bapps import (
    JND_CATEGORIES,
    TWO_AFC_CATEGORIES,
    JNDDataset,
    TwoAFCDataset,
    bapps_present,
    category_listing,
    collate,
    present_categories,
    read_judgment,
    resolve_categories,
)
from spips_bench.errors import DatasetError, ImageReadError


def _colour(name: str, part: str) -> tuple[int, int, int]:
    """A colour that encodes the item's stem and part, so pairing mistakes show in the pixels."""
    k = int(name)
    return (k % 256, {"ref": 10, "p0": 20, "p1": 30, "same": 40}[part], 200)


def make_2afc(root: Path, names: list[str], split: str = "val", category: str = "traditional",
              size: int = 16) -> Path:
    folder = root / "2afc" / split / category
    for part in ("ref", "p0", "p1", "judge"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    # Written in reverse so that directory order differs from sorted order.
    for name in reversed(names):
        for part in ("ref", "p0", "p1"):
            Image.new("RGB", (size, size), _colour(name, part)).save(folder / part / f"{name}.png")
        np.save(folder / "judge" / f"{name}.npy", np.array([int(name) % 6 / 5], dtype=np.float32))
    return folder


def make_jnd(root: Path, names: list[str], category: str = "cnn", size: int = 16) -> Path:
    folder = root / "jnd" / "val" / category
    for part in ("p0", "p1", "same"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    for name in names:
        for part in ("p0", "p1"):
            Image.new("RGB", (size, size), _colour(name, part)).save(folder / part / f"{name}.png")
        np.save(folder / "same" / f"{name}.npy", np.array([[int(name) % 4 / 3]]))
    return folder


def test_categories_match_the_official_layout() -> None:
    assert TWO_AFC_CATEGORIES == {
        "train": ("traditional", "cnn", "mix"),
        "val": ("traditional", "cnn", "superres", "deblur", "color", "frameinterp"),
    }
    assert JND_CATEGORIES == ("traditional", "cnn")


def test_items_are_paired_by_name(tmp_path: Path) -> None:
    names = ["000000", "000002", "000010", "000123"]
    make_2afc(tmp_path, names)
    ds = TwoAFCDataset(tmp_path, "val", "traditional", load_size=None)
    assert len(ds) == 4 and ds.names == names
    for i, name in enumerate(names):
        item = ds[i]
        assert item["name"] == name and item["conversions"] == []
        for part in ("ref", "p0", "p1"):
            assert item[part].shape == (3, 16, 16) and item[part].dtype == torch.float32
            expected = torch.tensor(_colour(name, part), dtype=torch.float32) / 255
            torch.testing.assert_close(item[part][:, 5, 7], expected)
        assert item["judge"].shape == () and item["judge"].dtype == torch.float32
        assert item["judge"].item() == pytest.approx(int(name) % 6 / 5)
    assert ds[-1]["name"] == "000123"
    with pytest.raises(IndexError):
        ds[4]


def test_missing_file_names_the_stem_and_folder(tmp_path: Path) -> None:
    folder = make_2afc(tmp_path, ["000000", "000001", "000002"])
    (folder / "p1" / "000001.png").unlink()
    with pytest.raises(DatasetError, match=r"p1 lacks 1 name.*000001"):
        TwoAFCDataset(tmp_path, "val", "traditional")


def test_extra_unpaired_file_is_refused(tmp_path: Path) -> None:
    folder = make_2afc(tmp_path, ["000000", "000001"])
    Image.new("RGB", (16, 16)).save(folder / "ref" / "000999.png")
    with pytest.raises(DatasetError) as info:
        TwoAFCDataset(tmp_path, "val", "traditional")
    message = str(info.value)
    for part in ("p0", "p1", "judge"):
        assert f"{folder / part} lacks 1 name(s)" in message
    assert "000999" in message


def test_many_missing_names_are_summarised(tmp_path: Path) -> None:
    folder = make_2afc(tmp_path, [f"{i:06d}" for i in range(9)])
    for i in range(8):
        (folder / "judge" / f"{i:06d}.npy").unlink()
    with pytest.raises(DatasetError, match=r"judge lacks 8 name\(s\).*000004 and 3 more"):
        TwoAFCDataset(tmp_path, "val", "traditional")


def test_unexpected_and_hidden_files(tmp_path: Path) -> None:
    folder = make_2afc(tmp_path, ["000000"])
    (folder / "p0" / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    assert len(TwoAFCDataset(tmp_path, "val", "traditional")) == 1
    (folder / "p0" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"notes\.txt: unexpected file"):
        TwoAFCDataset(tmp_path, "val", "traditional")


def test_missing_or_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"2afc.val.cnn: BAPPS 2afc val/cnn not found.*download bapps"):
        TwoAFCDataset(tmp_path, "val", "cnn")
    folder = tmp_path / "2afc" / "val" / "cnn"
    for part in ("ref", "p0", "p1"):
        (folder / part).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"judge: folder not found"):
        TwoAFCDataset(tmp_path, "val", "cnn")
    (folder / "judge").mkdir()
    with pytest.raises(DatasetError, match="are empty"):
        TwoAFCDataset(tmp_path, "val", "cnn")


@pytest.mark.parametrize("value", [np.array(0.4), np.array([0.4]), np.array([[[0.4]]]), np.zeros((0,))])
def test_judgment_shapes(tmp_path: Path, value: np.ndarray) -> None:
    path = tmp_path / "j.npy"
    np.save(path, value)
    if value.size == 1:
        assert read_judgment(path) == pytest.approx(0.4)
    else:
        with pytest.raises(DatasetError, match=r"j\.npy: a judgment file must hold exactly one value"):
            read_judgment(path)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (np.array([np.nan]), "nan"),
        (np.array([1.5]), "1.5"),
        (np.array([-0.2]), "-0.2"),
        (np.array([0.2, 0.4]), r"shape \(2,\)"),
        (np.array(["0.4"]), "dtype <U3 is not a number"),
    ],
)
def test_bad_judgments_name_the_file(tmp_path: Path, value: np.ndarray, pattern: str) -> None:
    make_2afc(tmp_path, ["000000", "000001"])
    bad = tmp_path / "2afc" / "val" / "traditional" / "judge" / "000001.npy"
    np.save(bad, value)
    ds = TwoAFCDataset(tmp_path, "val", "traditional")
    ds[0]  # the good item still loads
    with pytest.raises(DatasetError, match=pattern) as info:
        ds[1]
    assert str(bad) in str(info.value)


def test_unreadable_judgment_files(tmp_path: Path) -> None:
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"h": 0.5}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"obj\.npy: not a readable \.npy"):
        read_judgment(pickled)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    with pytest.raises(DatasetError, match=r"garbage\.npy: not a readable \.npy"):
        read_judgment(garbage)


def _png_bytes(tmp_path: Path) -> bytes:
    Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "good.png")
    return (tmp_path / "good.png").read_bytes()


@pytest.mark.parametrize("kind", ["empty", "text", "truncated"])
def test_bad_images_raise_image_read_error(tmp_path: Path, kind: str) -> None:
    folder = make_2afc(tmp_path / "set", ["000000"])
    target = folder / "p0" / "000000.png"
    content = {"empty": b"", "text": b"this is not an image\n", "truncated": _png_bytes(tmp_path)[:40]}[kind]
    target.write_bytes(content)
    ds = TwoAFCDataset(tmp_path / "set", "val", "traditional")
    with pytest.raises(ImageReadError) as info:
        ds[0]
    assert str(target) in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_image_raises_image_read_error(tmp_path: Path) -> None:
    folder = make_2afc(tmp_path, ["000000"])
    target = folder / "ref" / "000000.png"
    target.chmod(0)
    try:
        with pytest.raises(ImageReadError, match="permission denied"):
            TwoAFCDataset(tmp_path, "val", "traditional")[0]
    finally:
        target.chmod(0o644)


def test_grayscale_rgba_and_16_bit_are_converted_and_recorded(tmp_path: Path) -> None:
    folder = make_2afc(tmp_path, ["000000"])
    Image.new("L", (16, 16), 100).save(folder / "ref" / "000000.png")
    Image.new("RGBA", (16, 16), (10, 20, 30, 40)).save(folder / "p0" / "000000.png")
    Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)).save(folder / "p1" / "000000.png")
    item = TwoAFCDataset(tmp_path, "val", "traditional", load_size=None)[0]
    conv = item["conversions"]
    assert len(conv) == 3
    assert conv[0].startswith("ref: L->RGB")
    assert conv[1].startswith("p0: RGBA->RGB")
    assert conv[2].startswith("p1: I;16") and "16-bit" in conv[2]
    torch.testing.assert_close(item["ref"], torch.full((3, 16, 16), 100 / 255))
    # Alpha is dropped, colour kept as stored.
    torch.testing.assert_close(item["p0"][:, 0, 0], torch.tensor([10, 20, 30]) / 255)
    # 16-bit keeps its full precision: 32768 / 65535, not 128 / 255.
    torch.testing.assert_close(item["p1"], torch.full((3, 16, 16), 32768 / 65535), rtol=0, atol=1e-7)


def test_load_size_resizes_with_pil_bilinear(tmp_path: Path) -> None:
    folder = make_2afc(tmp_path, ["000000"], size=80)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "p1" / "000000.png")
    native = TwoAFCDataset(tmp_path, "val", "traditional", load_size=None)[0]
    small = TwoAFCDataset(tmp_path, "val", "traditional", load_size=64)[0]
    assert native["p1"].shape == (3, 80, 80) and small["p1"].shape == (3, 64, 64)
    torch.testing.assert_close(native["p1"], torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    resized = Image.fromarray(pixels).resize((64, 64), Image.Resampling.BILINEAR)
    reference = np.asarray(resized, dtype=np.float32) / 255
    torch.testing.assert_close(small["p1"], torch.from_numpy(reference).permute(2, 0, 1))


@pytest.mark.parametrize("bad", [0, -64, 64.0, True, "64"])
def test_bad_load_size(tmp_path: Path, bad: object) -> None:
    make_2afc(tmp_path, ["000000"])
    with pytest.raises(ValueError, match="load_size must be a positive int"):
        TwoAFCDataset(tmp_path, "val", "traditional", load_size=bad)  # type: ignore[arg-type]


def test_jnd_dataset(tmp_path: Path) -> None:
    make_jnd(tmp_path, ["000000", "000001", "000002"])
    ds = JNDDataset(tmp_path, "val", "cnn", load_size=64)
    assert len(ds) == 3
    item = ds[2]
    assert set(item) == {"p0", "p1", "same", "name", "conversions", "files"}
    assert item["files"] == {p: str(tmp_path / "jnd" / "val" / "cnn" / p / "000002.png") for p in ("p0", "p1")}
    assert item["p0"].shape == (3, 64, 64)
    assert item["same"].item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="has no split 'train'"):
        JNDDataset(tmp_path, "train", "cnn")


def test_resolve_categories_and_presence(tmp_path: Path) -> None:
    assert resolve_categories("2afc", "val", None) == list(TWO_AFC_CATEGORIES["val"])
    assert resolve_categories("2afc", "train", ["mix", "cnn", "mix"]) == ["mix", "cnn"]
    assert resolve_categories("jnd", "val", []) == ["traditional", "cnn"]
    with pytest.raises(ValueError, match="Did you mean 'traditional'"):
        resolve_categories("2afc", "val", ["tradtional"])
    with pytest.raises(ValueError, match="has no category 'mix'"):
        resolve_categories("2afc", "val", ["mix"])
    with pytest.raises(ValueError, match="Did you mean 'val'"):
        resolve_categories("2afc", "vall", None)
    with pytest.raises(ValueError, match="unknown BAPPS kind"):
        resolve_categories("3afc", "val", None)
    with pytest.raises(ValueError, match="Did you mean 'frameinterp'"):
        TwoAFCDataset(tmp_path, "val", "frame_interp")
    assert not bapps_present(tmp_path)
    assert present_categories(tmp_path) == {"2afc": [], "jnd": []}
    (tmp_path / "2afc" / "val" / "not-a-category").mkdir(parents=True)
    assert not bapps_present(tmp_path)
    # A partial tree counts as BAPPS (the runner scores what is there): one category is enough.
    make_jnd(tmp_path, ["000000"], category="cnn")
    assert bapps_present(tmp_path) and present_categories(tmp_path) == {"2afc": [], "jnd": ["cnn"]}
    for c in TWO_AFC_CATEGORIES["val"][:-1]:
        make_2afc(tmp_path, ["000000"], category=c)
    assert present_categories(tmp_path)["2afc"] == list(TWO_AFC_CATEGORIES["val"][:-1])
    assert not bapps_present(tmp_path, "train") and present_categories(tmp_path, "train") == {"2afc": []}


def test_dataloader_with_workers_and_collate(tmp_path: Path) -> None:
    names = [f"{i:06d}" for i in range(10)]
    make_2afc(tmp_path, names, size=20)
    ds = TwoAFCDataset(tmp_path, "val", "traditional", load_size=16)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [len(b["name"]) for b in batches] == [4, 4, 2]
    first = batches[0]
    assert first["ref"].shape == (4, 3, 16, 16) and first["judge"].shape == (4,)
    assert first["name"] == names[:4] and first["conversions"] == [[], [], [], []]
    got = torch.cat([b["judge"] for b in batches])
    torch.testing.assert_close(got, torch.tensor([int(n) % 6 / 5 for n in names]))


def test_collate_errors() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    a = {"p0": torch.zeros(3, 4, 4), "name": "a"}
    # Items of another size are never stacked: they become per-sample problems naming the way out.
    mixed = collate([a, {"p0": torch.zeros(3, 5, 5), "name": "b"}])
    assert mixed["name"] == ["a"] and mixed["p0"].shape == (1, 3, 4, 4)
    assert [(p["name"], p["error"]) for p in mixed["problems"]] == [("b", "DatasetError")]
    assert "--batch-size 1" in mixed["problems"][0]["reason"]
    with pytest.raises(ValueError, match="different keys"):
        collate([a, {"p1": torch.zeros(3, 4, 4), "name": "b"}])


def test_iteration_does_not_retain_items(tmp_path: Path) -> None:
    make_2afc(tmp_path, [f"{i:06d}" for i in range(30)])
    ds = TwoAFCDataset(tmp_path, "val", "traditional")
    refs = []
    for i in range(len(ds)):
        item = ds[i]
        refs.append(weakref.ref(item["ref"]))
        del item
    gc.collect()
    assert all(r() is None for r in refs)
    # What the dataset keeps is the listing only: a few strings per item, no arrays.
    held = [v for v in vars(ds).values() if isinstance(v, (torch.Tensor, np.ndarray))]
    assert held == []


def test_category_listing_holds_names_and_sizes_only(tmp_path: Path) -> None:
    folder = make_2afc(tmp_path, ["000001", "000000"])
    (folder / "ref" / ".DS_Store").write_bytes(b"x")
    listing = category_listing(folder)
    assert [stem for stem, _ in listing] == ["000000"] * 4 + ["000001"] * 4
    size = (folder / "judge" / "000000.npy").stat().st_size
    assert ("000000", f"judge/000000.npy {size}") in listing
    assert not any(".DS_Store" in line for _, line in listing)
    # Same size, other bytes: the listing does not read files (a cheap check of names and sizes).
    png = folder / "p0" / "000001.png"
    before = category_listing(folder)
    png.write_bytes(bytes(reversed(png.read_bytes())))
    assert category_listing(folder) == before
    png.write_bytes(png.read_bytes() + b"\0")
    assert category_listing(folder) != before
