"""The decoded-patch cache (spips_bench.data.cache): exact values, validation, atomic builds, fallbacks."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spips_bench.cli import main
from spips_bench.data import bapps, cache
from spips_bench.data.bapps import JNDDataset, TwoAFCDataset
from spips_bench.data.images import read_image
from spips_bench.run.config import RunConfig
from spips_bench.run.runner import run_benchmark

METRIC = "psnr"  # cheap: these tests are about the data path


@pytest.fixture
def patches(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh patch cache for this test (the demo set stays in the shared cache folder)."""
    monkeypatch.setattr(cache, "patches_dir", lambda: tmp_path / "cache" / cache.FOLDER)
    monkeypatch.setattr(cache, "_notified", set())
    return tmp_path / "cache" / cache.FOLDER


class Decodes:
    """Counts the images decoded through the readers (every decode goes through ``bapps.read_image``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[Path] = []
        self.fail_at: int | None = None  # raise RuntimeError at this call (an interrupted build)

        def counting(path: Any, size: int | None = None) -> Any:
            if self.fail_at is not None and len(self.files) == self.fail_at:
                raise RuntimeError("killed in the middle of the build")
            self.files.append(Path(path))
            return read_image(path, size)

        monkeypatch.setattr(bapps, "read_image", counting)

    def take(self) -> list[Path]:
        out, self.files = self.files, []
        return out


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    return Decodes(monkeypatch)


def _exact(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two items are the same: keys, plain values, and every tensor's dtype, shape, strides and bytes."""
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            other = b[key]
            assert (value.dtype, value.shape, value.stride()) == (other.dtype, other.shape, other.stride()), key
            assert value.numpy().tobytes() == other.numpy().tobytes(), key
        else:
            assert value == b[key], key


def _run(root: Path, out: Path, **options: Any) -> dict[str, Any]:
    config = RunConfig(metrics=[METRIC], dataset="bapps", root=root, out=out, bootstrap=10, progress=False,
                       categories=["cnn"], batch_size=5, **options)
    return run_benchmark(config).record


def _cli(root: Path, out: Path, *extra: str) -> int:
    return main(["run", "--metrics", METRIC, "--dataset", "bapps", "--root", str(root), "--categories", "cnn",
                 "--out", str(out), "--workers", "0", "--bootstrap", "10", "--batch-size", "5", "--no-progress",
                 *extra])


# -- values --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "split", "load_size"), [("2afc", "val", 64), ("jnd", "val", 64),
                                                          ("2afc", "train", 64), ("2afc", "val", 48)])
def test_cached_items_equal_decoded_ones_bit_for_bit(demo: Path, patches: Path, kind: str, split: str,
                                                     load_size: int) -> None:
    reader = bapps.reader_for(kind)
    categories = bapps.TWO_AFC_CATEGORIES[split] if kind == "2afc" else bapps.JND_CATEGORIES
    if split == "train" or load_size != 64:
        categories = categories[:1]
    for category in categories:
        plain = reader(demo, split, category, load_size)
        cached = reader(demo, split, category, load_size, cache=True)
        assert cached.use_cache() and cached.cache_state == "built"
        again = reader(demo, split, category, load_size)
        assert again.use_cache() and again.cache_state == "reused"
        for i in range(len(plain)):
            expected = plain[i]
            _exact(expected, cached[i])
            _exact(expected, again[i])


def test_exact_uint8_accepts_only_values_it_gives_back() -> None:
    k = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    back = cache.exact_uint8(k.astype(np.float32) / 255.0)
    assert back is not None and np.array_equal(back, k)
    sixteen = (np.arange(768, dtype=np.float32).reshape(16, 16, 3) * 83 % 65536) / np.float32(65535.0)
    assert cache.exact_uint8(sixteen) is None  # a 16-bit image is not cut to 8 bits
    assert cache.exact_uint8(np.full((2, 2, 3), np.nan, dtype=np.float32)) is None


def test_grayscale_and_16_bit_samples(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path,
                                      patches: Path, decodes: Decodes) -> None:
    """An 8-bit grayscale file is cached with its conversion note; a 16-bit one is decoded every time
    (its values are not k/255), and both items equal the reader's."""
    from PIL import Image

    root = demo_cnn_copy(tmp_path / "b", 4)
    folder = root / "2afc" / "val" / "cnn"
    Image.open(folder / "p0" / "000001.png").convert("L").save(folder / "p0" / "000001.png")
    rgb = np.asarray(Image.open(folder / "p1" / "000002.png").convert("L"), dtype=np.uint16) * 257 + 3
    Image.fromarray(rgb.astype(np.uint16)).save(folder / "p1" / "000002.png")
    plain = TwoAFCDataset(root, "val", "cnn")
    items = [plain[i] for i in range(4)]
    assert "p0: L->RGB" in items[1]["conversions"] and "16-bit" in items[2]["conversions"][0]
    ds = TwoAFCDataset(root, "val", "cnn", cache=True)
    assert ds.use_cache()
    decodes.take()
    for i in range(4):
        _exact(items[i], ds[i])
    assert decodes.take() == [folder / part / "000002.png" for part in ("ref", "p0", "p1")]


def test_the_native_load_size_is_not_cached(demo: Path, patches: Path) -> None:
    ds = TwoAFCDataset(demo, "val", "cnn", None, cache=True)
    assert not ds.use_cache() and ds.cache_state == "off"
    assert not patches.exists()


# -- reuse and validation --------------------------------------------------------------------------------


def test_the_second_run_decodes_nothing(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path,
                                        patches: Path, decodes: Decodes) -> None:
    root = demo_cnn_copy(tmp_path / "b", 10)
    first = _run(root, tmp_path / "one")
    assert len(decodes.take()) == 10 * 3 + 10 * 2  # 2AFC triplets and JND pairs, each image once
    assert first["throughput"]["patch_cache"] == {"built": 2}
    second = _run(root, tmp_path / "two")
    assert decodes.take() == []
    assert second["throughput"]["patch_cache"] == {"reused": 2}
    assert len(list(patches.iterdir())) == 2


def test_a_changed_file_rebuilds_only_its_category(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path,
                                                   patches: Path, decodes: Decodes,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = demo_cnn_copy(tmp_path / "b", 10)
    _run(root, tmp_path / "one")
    decodes.take()
    touched = root / "2afc" / "val" / "cnn" / "p0" / "000003.png"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    capsys.readouterr()
    _run(root, tmp_path / "two")
    again = decodes.take()
    assert len(again) == 30 and {p.parents[3].name for p in again} == {"2afc"}  # JND's cache is reused
    err = capsys.readouterr().err
    assert "1 source file(s) changed, added or removed (p0/000003.png); decoding 2afc/val/cnn again." in err
    # a sample removed from every part, and one added back
    for part in ("ref", "p0", "p1", "judge"):
        victim = next((root / "2afc" / "val" / "cnn" / part).glob("000009.*"))
        victim.rename(tmp_path / f"{part}-{victim.name}")
    assert TwoAFCDataset(root, "val", "cnn").use_cache()  # names differ: rebuilt
    assert len(decodes.take()) == 27
    for part in ("ref", "p0", "p1", "judge"):
        moved = next(tmp_path.glob(f"{part}-000009.*"))
        moved.rename(root / "2afc" / "val" / "cnn" / part / moved.name.split("-", 1)[1])
    ds = TwoAFCDataset(root, "val", "cnn")
    assert ds.use_cache() and ds.cache_state == "built" and len(decodes.take()) == 30


def test_a_same_size_same_time_replacement_is_seen(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path,
                                                   patches: Path, decodes: Decodes) -> None:
    """A file rewritten within the timestamp resolution keeps its size and time: recently modified files
    are also checked by content."""
    root = demo_cnn_copy(tmp_path / "b", 4)
    target = root / "2afc" / "val" / "cnn" / "ref" / "000002.png"
    assert TwoAFCDataset(root, "val", "cnn").use_cache()
    decodes.take()
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size; the PNG's CRC now fails
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    ds = TwoAFCDataset(root, "val", "cnn", report_problems=True)
    assert ds.use_cache() and ds.cache_state == "built"  # rebuilt, not trusted
    item = ds[2]
    assert item["problem"]["file"] == str(target) and item["problem"]["error"] == "ImageReadError"


def test_a_corrupt_source_is_still_named(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path,
                                         patches: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = demo_cnn_copy(tmp_path / "b", 10)
    assert _cli(root, tmp_path / "warm") == 0  # the cache is warm before the damage
    bad = root / "2afc" / "val" / "cnn" / "p1" / "000007.png"
    bad.write_bytes(bad.read_bytes()[:100])
    for _ in range(2):  # the failure is never cached as data: the second run meets it again
        capsys.readouterr()
        assert _cli(root, tmp_path / "fail") == 2
        err = capsys.readouterr().err
        assert f"{bad}: corrupt or truncated image" in err and "sample 000007" in err
    assert _cli(root, tmp_path / "skip", "--on-error", "skip") == 0
    record = json.loads((tmp_path / "skip" / "run.json").read_text(encoding="utf-8"))
    assert [(e["sample"], e["file"]) for e in record["skipped"]] == [("000007", str(bad))]


# -- writing ---------------------------------------------------------------------------------------------


def test_no_cache_never_writes_the_cache_folder(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path,
                                                patches: Path, decodes: Decodes) -> None:
    root = demo_cnn_copy(tmp_path / "b", 6)
    assert _cli(root, tmp_path / "a", "--no-cache") == 0
    assert not patches.exists()
    assert _cli(root, tmp_path / "b2", "--no-cache") == 0
    assert len(decodes.take()) == 2 * (6 * 3 + 6 * 2)  # every run decodes every image


def test_an_interrupted_build_is_never_trusted(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path,
                                               patches: Path, decodes: Decodes) -> None:
    root = demo_cnn_copy(tmp_path / "b", 10)
    decodes.fail_at = 13
    with pytest.raises(RuntimeError, match="killed in the middle"):
        TwoAFCDataset(root, "val", "cnn").use_cache()
    (folder,) = patches.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [cache.LOCK]  # no index, no array, no temporary
    # a build killed outright leaves temporaries and arrays without an index: removed, never read
    (folder / ".ref-dead.npy.x1.tmp").write_bytes(b"half")
    (folder / "ref-dead.npy").write_bytes(b"half")
    decodes.fail_at = None
    decodes.take()
    ds = TwoAFCDataset(root, "val", "cnn")
    assert ds.use_cache() and ds.cache_state == "built" and len(decodes.take()) == 30
    assert not (folder / ".ref-dead.npy.x1.tmp").exists() and not (folder / "ref-dead.npy").exists()
    plain = TwoAFCDataset(root, "val", "cnn")
    for i in range(len(ds)):
        _exact(plain[i], ds[i])


def test_a_cache_folder_that_cannot_be_written(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path,
                                               patches: Path, decodes: Decodes, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = demo_cnn_copy(tmp_path / "b", 4)
    patches.parent.mkdir(parents=True)
    patches.write_text("not a folder")  # nothing can be created below it
    capsys.readouterr()
    _run(root, tmp_path / "one")
    err = capsys.readouterr().err
    assert err.count("notice: the patch cache") == 1 and "decoding every patch from its file" in err
    assert len(decodes.take()) == 4 * 3 + 4 * 2
    # a read-only folder that holds a valid cache is still read
    patches.unlink()
    assert TwoAFCDataset(root, "val", "cnn").use_cache()
    decodes.take()

    @__import__("contextlib").contextmanager
    def read_only(folder: Path) -> Iterator[None]:
        raise PermissionError(13, "Permission denied")
        yield

    monkeypatch.setattr(cache, "_locked", read_only)
    ds = TwoAFCDataset(root, "val", "cnn")
    assert ds.use_cache() and ds.cache_state == "reused"
    assert [ds[i]["name"] for i in range(4)] and decodes.take() == []


def test_two_builders_at_once(demo_cnn_copy: Callable[[Path, int], Path], tmp_path: Path, patches: Path,
                              decodes: Decodes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second process waits for the first one's lock and then reads what it built."""
    root = demo_cnn_copy(tmp_path / "b", 10)
    waiting = threading.Event()
    real_acquire = cache.acquire
    first = threading.current_thread()

    def acquire(fd: int) -> None:
        if threading.current_thread() is not first:
            waiting.set()  # the second builder is about to wait for the lock
        real_acquire(fd)

    monkeypatch.setattr(cache, "acquire", acquire)
    states: list[str] = []
    other = threading.Thread(target=lambda: states.append(_state(TwoAFCDataset(root, "val", "cnn"))))
    real_read = bapps.read_image

    def slow_first(path: Any, size: int | None = None) -> Any:
        if not other.is_alive() and not states:
            other.start()
            assert waiting.wait(timeout=60)
        return real_read(path, size)

    monkeypatch.setattr(bapps, "read_image", slow_first)
    mine = _state(TwoAFCDataset(root, "val", "cnn"))
    other.join(timeout=120)
    assert (mine, states) == ("built", ["reused"])
    (folder,) = patches.iterdir()
    assert len(list(folder.glob("*.npy"))) == 4  # one build: three image parts and the judgments


def _state(ds: TwoAFCDataset) -> str:
    ds.use_cache()
    return ds.cache_state


def test_workers_and_pickled_readers_read_the_cache(demo: Path, patches: Path) -> None:
    from torch.utils.data import DataLoader

    plain = JNDDataset(demo, "val", "cnn")
    ds = JNDDataset(demo, "val", "cnn", report_problems=True)
    assert ds.use_cache()
    ds[0]  # the arrays are open in this process now
    blob = pickle.dumps(ds)
    assert len(blob) < 50_000  # the paths travel, not the arrays
    copy = pickle.loads(blob)
    loader = DataLoader(ds, batch_size=16, num_workers=2, collate_fn=bapps.collate)
    batches = list(loader)
    expected = bapps.collate([plain[i] for i in range(len(plain))])
    got = {k: torch.cat([b[k] for b in batches]) for k in ("p0", "p1", "same")}
    for key, value in got.items():
        assert value.numpy().tobytes() == expected[key].numpy().tobytes()
    for i in range(len(plain)):
        _exact(plain[i], copy[i])


# -- the results do not depend on the cache ----------------------------------------------------------------


def _folder_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("run.json", ".lock")}


def test_the_store_is_the_same_with_and_without_the_cache(demo_cnn_copy: Callable[[Path, int], Path],
                                                          tmp_path: Path, patches: Path) -> None:
    from spips_bench.report.check import compare_run_records

    root = demo_cnn_copy(tmp_path / "b", 12)
    records = [_run(root, tmp_path / "off", cache=False), _run(root, tmp_path / "cold"),
               _run(root, tmp_path / "warm")]
    assert [r["throughput"]["patch_cache"] for r in records] == [{}, {"built": 2}, {"reused": 2}]
    off = _folder_bytes(tmp_path / "off")
    assert any(k.startswith("scores/") for k in off)
    assert _folder_bytes(tmp_path / "cold") == off and _folder_bytes(tmp_path / "warm") == off
    for record in records[1:]:
        assert compare_run_records("run.json", records[0], record) == ([], [])


def test_training_with_the_cache_equals_training_without(demo: Path, tmp_path: Path, patches: Path) -> None:
    from spips_bench.training.lpips_protocol import TrainConfig, train

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    results: list[Any] = []
    for use in (False, True, True):
        cfg = TrainConfig(metric="spips", dataset="demo", epochs=1, decay_epochs=0, batch_size=25, lr=1e-2,
                          max_samples=25, heldout_max_samples=5, metric_options={"pretrained": False},
                          progress=False, cache=use)
        results.append(train(cfg, tmp_path / f"run{len(results)}", log=lambda s: None))
        assert patches.exists() is use or len(results) > 1
    digests = {sha(r.final_checkpoint) for r in results}
    assert len(digests) == 1
    curves = [[(e.epoch, e.loss, e.heldout_2afc) for e in r.records] for r in results]
    np.testing.assert_equal(curves[1], curves[0])  # NaN (no loss before the first epoch) equals NaN here
    np.testing.assert_equal(curves[2], curves[0])
    train_json = json.loads((tmp_path / "run1" / "train.json").read_text(encoding="utf-8"))
    assert "cache" not in train_json["config"]
