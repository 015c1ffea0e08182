"""Hostile inputs at the edges: weight and checkpoint tensors, archives, redirects, disks, judgments, sizes.

Downloads are served by the local HTTP server of ``test_download`` on 127.0.0.1; a redirect to another
host must be refused before any connection is made, which the tests check on the socket layer.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import socket
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_download import MANIFEST_NAME, Server, _file, _tar_gz, bapps_val_archive, fetch

from spips_bench import io as spips_io
from spips_bench import weights
from spips_bench.cli import main
from spips_bench.data import download as download_module
from spips_bench.data.bapps import read_judgment
from spips_bench.errors import (
    DatasetError,
    DownloadError,
    UnsafeArchiveError,
    WeightsIntegrityError,
    WeightsUnavailableError,
)
from spips_bench.run.store import read_table
from spips_bench.weights import WEIGHTS, WeightFile
from spips_bench.zoo.spips.checkpoint import read_checkpoint, save_checkpoint

# -- (weights) tensors that are not trained float weights ---------------------------------------------------


def _bad_state(kind: str) -> dict[str, torch.Tensor]:
    good = torch.full((2, 3), 0.5)
    if kind == "int32":
        return {"lin.weight": good, "lin.bias": torch.zeros(2, dtype=torch.int32)}
    if kind == "bool":
        return {"lin.weight": good, "lin.bias": torch.ones(2, dtype=torch.bool)}
    bad = good.clone()
    bad[1, 2] = float("nan") if kind == "nan" else float("inf")
    return {"lin.weight": bad, "lin.bias": torch.zeros(2)}


_DTYPE_OR_VALUE = {"int32": "has dtype int32, not floating point", "bool": "has dtype bool, not floating point",
                   "nan": "holds 1 NaN or infinite value", "inf": "holds 1 NaN or infinite value"}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("kind", ["int32", "bool", "nan", "inf"])
def test_weight_file_with_non_float_or_non_finite_tensor_is_refused(tmp_path: Path, kind: str,
                                                                     suffix: str) -> None:
    from safetensors.torch import save_file

    path = tmp_path / f"w{suffix}"
    state = _bad_state(kind)
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    tensor = "lin.bias" if kind in ("int32", "bool") else "lin.weight"
    with pytest.raises(WeightsIntegrityError, match=rf"tensor '{tensor}' {_DTYPE_OR_VALUE[kind]}") as info:
        weights.load_file(path, label="weight file 'x'")
    assert str(info.value).startswith(f"{path} (weight file 'x'): tensor ")


def test_weight_file_with_a_batchnorm_counter_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bn.pth"
    torch.save({"bn.weight": torch.ones(3), "bn.num_batches_tracked": torch.tensor(7)}, path)
    assert set(weights.load_file(path)) == {"bn.weight", "bn.num_batches_tracked"}


@pytest.mark.parametrize("fmt", ["safetensors", "torch-zip"])
@pytest.mark.parametrize("kind", ["int32", "bool", "nan", "inf"])
def test_checkpoint_with_non_float_or_non_finite_tensor_is_refused(tmp_path: Path, kind: str, fmt: str) -> None:
    path = tmp_path / "heads.ckpt"
    if fmt == "safetensors":
        save_checkpoint(path, _bad_state(kind), {"backbone": "alex"})
    else:
        torch.save({"state_dict": _bad_state(kind), "config": json.dumps({"backbone": "alex"})}, path)
    with pytest.raises(WeightsIntegrityError, match=_DTYPE_OR_VALUE[kind]) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)
    # The same file with float, finite tensors loads.
    ok = tmp_path / "ok.ckpt"
    save_checkpoint(ok, {"lin.weight": torch.full((2, 3), 0.5), "lin.bias": torch.zeros(2)}, {"backbone": "alex"})
    assert set(read_checkpoint(ok)[0]) == {"lin.weight", "lin.bias"}


# -- (extraction) caps on bytes and members -------------------------------------------------------------------


def test_archive_that_inflates_a_thousandfold_is_refused(server: Server, tmp_path: Path) -> None:
    zeros = bytes(16 << 20)  # 16 MiB that gzip packs into a few KiB
    archive = _tar_gz([_file("val/traditional/ref/000000.png", b"x"), _file("val/traditional/ref/big.png", zeros)])
    assert len(archive) * 500 < len(zeros)
    server.files["twoafc_val.tar.gz"] = archive
    with pytest.raises(UnsafeArchiveError, match=r"more than [\d,]+ bytes .* 'val/traditional/ref/big.png'") as info:
        fetch(tmp_path, "val", server.url)
    limit, _ = download_module.extraction_limits(len(archive))
    assert f"more than {limit:,} bytes (10x its own size), a {len(archive):,}-byte archive" in str(info.value)
    # Refused from the member's header, before any of its bytes were written; nothing is left behind.
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["twoafc_val.tar.gz.rejected"]


def test_archive_with_a_flood_of_members_is_refused(server: Server, tmp_path: Path) -> None:
    members = [_file(f"val/traditional/ref/{i:06d}.png", b"") for i in range(3000)]
    archive = _tar_gz(members)
    server.files["twoafc_val.tar.gz"] = archive
    with pytest.raises(UnsafeArchiveError, match=r"more than [\d,]+ members") as info:
        fetch(tmp_path, "val", server.url)
    _, cap = download_module.extraction_limits(len(archive))
    assert cap < 3000 and f"more than {cap:,} members" in str(info.value)
    assert not (tmp_path / "2afc").exists()


def test_extraction_limits_leave_room_for_the_official_archives() -> None:
    # BAPPS val: about 1.1 GB of PNGs (they do not compress further) in about 150,000 files.
    max_bytes, max_members = download_module.extraction_limits(1_100_000_000)
    assert max_bytes > 5 * 1_100_000_000 and max_members > 5 * 150_000


# -- (offline) redirects --------------------------------------------------------------------------------------


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host a socket is resolved or connected for; anything but this machine fails the test."""
    seen: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(host))
        if host not in ("127.0.0.1", "localhost", "::1"):
            pytest.fail(f"a connection to {host} was attempted")
        return real_getaddrinfo(host, *args, **kwargs)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(address[0]))
        if address[0] not in ("127.0.0.1", "localhost", "::1"):
            pytest.fail(f"a connection to {address[0]} was attempted")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return seen


def test_offline_download_refuses_a_redirect_to_another_host(server: Server, tmp_path: Path,
                                                              connections: list[str]) -> None:
    # conftest sets SPIPS_BENCH_OFFLINE=1; 127.0.0.1 itself stays allowed.
    server.redirects["twoafc_val.tar.gz"] = "http://example.invalid/dataset/twoafc_val.tar.gz"
    with pytest.raises(DownloadError, match=r"redirects \(HTTP 302\) to http://example\.invalid/.*offline mode"):
        fetch(tmp_path, "val", server.url, retries=3)
    assert len(server.requests) == 1  # refused at once, not retried
    assert set(connections) == {"127.0.0.1"}
    assert not (tmp_path / "2afc").exists()


def test_offline_download_follows_a_redirect_on_this_machine(server: Server, tmp_path: Path,
                                                              connections: list[str]) -> None:
    server.files["twoafc_val.tar.gz"] = bapps_val_archive()
    server.redirects["old.tar.gz"] = server.url + "twoafc_val.tar.gz"
    real = download_module.ARCHIVES["val"]
    renamed = download_module.Archive("old.tar.gz", real.subdir, real.top, real.approx_bytes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(download_module.ARCHIVES, "val", renamed)
        [result] = fetch(tmp_path, "val", server.url)
    assert result.extracted and [r[0] for r in server.requests] == ["/dataset/old.tar.gz",
                                                                    "/dataset/twoafc_val.tar.gz"]
    assert set(connections) == {"127.0.0.1"}


def test_offline_weight_download_refuses_a_redirect_to_another_host(server: Server, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     connections: list[str]) -> None:
    server.redirects["w.pth"] = "http://example.invalid/w.pth"
    wf = WeightFile("test-file", "test-file.pth", server.url + "w.pth", "0" * 64, None, "test", "test")
    monkeypatch.setitem(WEIGHTS, wf.name, wf)
    monkeypatch.setenv(weights.ENV_OFFLINE, "1")
    with pytest.raises(WeightsUnavailableError, match=r"redirects \(HTTP 302\) to http://example\.invalid/w\.pth"):
        weights.download("test-file", dest_dir=tmp_path, progress=False)
    assert set(connections) == {"127.0.0.1"}
    assert list(tmp_path.iterdir()) == []
    # And a URL on another host is refused offline before any connection too.
    with pytest.raises(WeightsUnavailableError, match="offline mode forbids"):
        weights.download("test-file", dest_dir=tmp_path, progress=False, url="http://example.invalid/w.pth")
    assert set(connections) == {"127.0.0.1"}


# -- (manifest) trust only what extracted ----------------------------------------------------------------------


def test_a_first_bad_transfer_is_not_recorded_and_a_rerun_recovers(server: Server, tmp_path: Path) -> None:
    html = b"<html><body>Service temporarily unavailable</body></html>"
    server.files["twoafc_val.tar.gz"] = html  # served with 200, as some hosts do
    with pytest.raises(DownloadError, match=r"corrupt or truncated archive.*\.rejected.*downloads a fresh copy"):
        fetch(tmp_path, "val", server.url)
    assert not (tmp_path / MANIFEST_NAME).exists()
    assert (tmp_path / "twoafc_val.tar.gz.rejected").read_bytes() == html
    good = bapps_val_archive()
    server.files["twoafc_val.tar.gz"] = good
    [result] = fetch(tmp_path, "val", server.url)
    assert result.extracted and result.sha256 == hashlib.sha256(good).hexdigest()
    entry = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]["twoafc_val.tar.gz"]
    assert entry["sha256"] == result.sha256 and entry["size"] == len(good)


def test_resume_uses_if_range_so_a_changed_file_is_not_spliced(server: Server, tmp_path: Path) -> None:
    old, new = bapps_val_archive(seed=0), bapps_val_archive(seed=1)
    assert old != new
    server.files["twoafc_val.tar.gz"] = old
    server.etags["twoafc_val.tar.gz"] = '"v1"'
    server.always_truncate = True  # the first run keeps half of the old file
    with pytest.raises(DownloadError, match="download incomplete"):
        fetch(tmp_path, "val", server.url, retries=0)
    assert (tmp_path / "twoafc_val.tar.gz.part").read_bytes() == old[: len(old) // 2]
    # The file changes on the server before the rerun resumes.
    server.files["twoafc_val.tar.gz"] = new
    server.etags["twoafc_val.tar.gz"] = '"v2"'
    server.always_truncate = False
    server.requests.clear()
    server.if_range.clear()
    [result] = fetch(tmp_path, "val", server.url, keep_archive=True)
    assert server.requests == [("/dataset/twoafc_val.tar.gz", f"bytes={len(old) // 2}-")]
    assert server.if_range == ['"v1"']  # the server answered 200 with the whole new file
    assert (tmp_path / "twoafc_val.tar.gz").read_bytes() == new
    assert result.sha256 == hashlib.sha256(new).hexdigest()
    assert not (tmp_path / "twoafc_val.tar.gz.part.meta").exists()


def test_resume_of_an_unchanged_file_still_uses_range(server: Server, tmp_path: Path) -> None:
    archive = bapps_val_archive()
    server.files["twoafc_val.tar.gz"] = archive
    server.etags["twoafc_val.tar.gz"] = '"same"'
    server.break_next = 1
    fetch(tmp_path, "val", server.url, keep_archive=True, retries=2)
    assert [r[1] for r in server.requests] == [None, f"bytes={len(archive) // 2}-"]
    assert server.if_range == [None, '"same"']
    assert (tmp_path / "twoafc_val.tar.gz").read_bytes() == archive


# -- (disk) full or read-only ------------------------------------------------------------------------------------


def test_disk_full_during_extraction_keeps_the_good_archive(server: Server, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    archive = bapps_val_archive()
    server.files["twoafc_val.tar.gz"] = archive

    def full(self: tarfile.TarFile, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as mp:
        mp.setattr(tarfile.TarFile, "makefile", full)
        with pytest.raises(DownloadError) as info:
            fetch(tmp_path, "val", server.url)
    msg = str(info.value)
    assert "No space left on device" in msg and "the disk is full" in msg
    assert "is intact and kept: nothing has to be downloaded again" in msg and "corrupt" not in msg
    assert (tmp_path / "twoafc_val.tar.gz").read_bytes() == archive  # kept, not rejected
    assert not (tmp_path / "2afc").exists() and not list(tmp_path.glob(".extract-*"))
    # With space again the rerun extracts the kept archive without downloading it again.
    [result] = fetch(tmp_path, "val", server.url)
    assert result.extracted and len(server.requests) == 1
    assert (tmp_path / "2afc" / "val" / "traditional" / "judge" / "000002.npy").is_file()


@pytest.mark.parametrize(("code", "text", "pattern"), [
    (errno.EACCES, "Permission denied", "read-only or not writable"),
    (errno.EROFS, "Read-only file system", "read-only or not writable"),
    (errno.ENOSPC, "No space left on device", "the disk is full"),
])
def test_unwritable_download_folder_is_not_a_network_failure(server: Server, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, code: int,
                                                             text: str, pattern: str) -> None:
    server.files["twoafc_val.tar.gz"] = bapps_val_archive()
    real_open = open

    def refuse(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".part") and "b" in mode and ("w" in mode or "a" in mode):
            raise OSError(code, text, str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(spips_io, "open", refuse, raising=False)
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, "val", server.url, retries=3)
    msg = str(info.value)
    assert f"twoafc_val.tar.gz.part: cannot write ({text}); " in msg and pattern in msg
    assert "retries" not in msg and "--url-base" not in msg
    assert len(server.requests) == 1  # not retried


def test_disk_full_while_receiving_keeps_the_partial_file(server: Server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    archive = bapps_val_archive()
    server.files["twoafc_val.tar.gz"] = archive
    real_open = open

    class Full(io.BufferedWriter):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".part") and mode == "wb":
            return Full(real_open(file, "wb", buffering=0))
        return real_open(file, mode, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(spips_io, "open", opener, raising=False)
        with pytest.raises(DownloadError, match=r"the disk is full.*resumes from there"):
            fetch(tmp_path, "val", server.url, retries=3)
    assert len(server.requests) == 1
    [result] = fetch(tmp_path, "val", server.url)
    assert result.sha256 == hashlib.sha256(archive).hexdigest()


# -- (judgments) headers before data --------------------------------------------------------------------------------


def _npy_header_only(path: Path, shape: tuple[int, ...], descr: str = "<f8", version: tuple[int, int] = (1, 0),
                     data: bytes = b"") -> None:
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, header)
    else:
        np.lib.format.write_array_header_2_0(buf, header)
    path.write_bytes(buf.getvalue() + data)


def test_judgment_declaring_a_huge_shape_is_refused_from_its_header(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "judge.npy"
    _npy_header_only(path, (1 << 20, 1 << 20))  # 8 TiB of float64, declared in a 128-byte file
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load would allocate the declared shape"))
    monkeypatch.setattr(np, "fromfile", lambda *a, **k: pytest.fail("the data was read"))
    with pytest.raises(DatasetError, match=r"exactly one value, found shape \(1048576, 1048576\)") as info:
        read_judgment(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_judgment_header_versions_and_one_element_shapes(tmp_path: Path, version: tuple[int, int]) -> None:
    for shape in ((), (1,), (1, 1)):
        path = tmp_path / f"j{len(shape)}.npy"
        _npy_header_only(path, shape, "<f4", version, np.float32(0.25).tobytes())
        assert read_judgment(path) == 0.25


@pytest.mark.parametrize(("descr", "data", "pattern"), [
    ("|O", b"", "holds Python objects, which are never unpickled"),
    ("|b1", b"\x01", "dtype bool is not a number"),
    ("<c8", bytes(8), "dtype complex64 is not a number"),
    ("<f8", b"\x00\x00", "truncated"),
])
def test_judgment_of_objects_non_numbers_or_truncated_is_refused(tmp_path: Path, descr: str, data: bytes,
                                                                 pattern: str) -> None:
    path = tmp_path / "judge.npy"
    _npy_header_only(path, (1,), descr, data=data)
    with pytest.raises(DatasetError, match=pattern):
        read_judgment(path)


# -- runs and score: decompression bombs, native sizes -----------------------------------------------------------------


def _tree(root: Path, sizes: dict[str, int]) -> Path:
    """``root/2afc/val/cnn`` with one random triplet per name, each of the given side in pixels."""
    folder = root / "2afc" / "val" / "cnn"
    for part in ("ref", "p0", "p1", "judge"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    for i, (name, side) in enumerate(sizes.items()):
        rng = np.random.default_rng(i)
        for part in ("ref", "p0", "p1"):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / part / f"{name}.png")
        np.save(folder / "judge" / f"{name}.npy", np.array([0.25 * (i % 5)], dtype=np.float32))
    return folder


def _run(root: Path, out: Path, *extra: str) -> int:
    return main(["run", "--metrics", "psnr", "--dataset", "bapps", "--root", str(root), "--categories", "cnn",
                 "--kinds", "2afc", "--out", str(out), "--workers", "0", "--bootstrap", "10", "--no-progress",
                 *extra])


def _run_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def test_decompression_bomb_in_a_run_is_a_sample_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    names = {f"{i:06d}": 16 for i in range(6)}
    folder = _tree(tmp_path / "bapps", names)
    bomb = folder / "p1" / "000003.png"
    Image.new("RGB", (64, 64)).save(bomb)  # over the limit set below, then resized by --load-size
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert _run(tmp_path / "bapps", tmp_path / "fail", "--load-size", "16", "--batch-size", "2") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"{bomb}: image of 4,096 pixels" in lines[0] and "sample 000003" in lines[0]
    assert _run(tmp_path / "bapps", tmp_path / "skip", "--load-size", "16", "--batch-size", "2",
                "--on-error", "skip") == 0
    [skipped] = _run_json(tmp_path / "skip")["skipped"]
    assert skipped["sample"] == "000003" and skipped["file"] == str(bomb)
    assert "decompression bomb" in skipped["reason"]
    scores = read_table(tmp_path / "skip" / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))
    assert sorted(scores) == ["000000", "000001", "000002", "000004", "000005"]


def test_decompression_bomb_in_score_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ref, dist = tmp_path / "ref.png", tmp_path / "dist.png"
    Image.new("RGB", (64, 64), (10, 10, 10)).save(ref)
    Image.new("RGB", (64, 64), (12, 12, 12)).save(dist)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert main(["score", str(ref), str(dist), "--metrics", "psnr"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("spips-bench score: error: ")
    assert f"{ref}: image of 4,096 pixels, over Pillow's limit of 2,000" in err


def test_score_reports_exif_and_16_bit_conversions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_imageio import write_png16

    pixels = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 3
    ref, dist = tmp_path / "ref.png", tmp_path / "dist.png"
    Image.fromarray(pixels).save(ref, exif=exif)
    write_png16(dist, (np.rot90(pixels, 2).astype(np.uint16) * 257))  # the same picture, as displayed
    assert main(["score", str(ref), str(dist), "--metrics", "psnr"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"note: {ref} converted EXIF orientation 3: rotated 180 degrees",
                                         f"note: {dist} converted RGB;16->RGB (16-bit, full precision)"]
    # x * 257 / 65535 == x / 255: the two are identical once displayed, so PSNR is infinite.
    assert captured.out.split()[:2] == ["psnr", "inf"]


def test_native_size_batches_of_mixed_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sizes = {"000000": 16, "000001": 16, "000002": 24, "000003": 16, "000004": 24, "000005": 24, "000006": 16}
    folder = _tree(tmp_path / "bapps", sizes)
    root = tmp_path / "bapps"
    # One sample per batch: every size is scored; this is the reference each sample's score must equal.
    assert _run(root, tmp_path / "one", "--load-size", "native", "--batch-size", "1") == 0
    alone = read_table(tmp_path / "one" / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))
    assert sorted(alone) == sorted(sizes)
    # Batches of four: [0..3] is mostly 16 px, so 000002 cannot join it; [4..6] is mostly 24 px.
    assert _run(root, tmp_path / "fail", "--load-size", "native", "--batch-size", "4") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{folder / 'ref' / '000002.png'}: ref is 24x24 px, but the other samples of its batch are 16x16 px" in err
    assert "--batch-size 1" in err
    assert "error" not in _run_json(tmp_path / "fail") or "Traceback" not in _run_json(tmp_path / "fail")["error"]
    assert _run(root, tmp_path / "skip", "--load-size", "native", "--batch-size", "4", "--on-error", "skip") == 0
    skipped = {s["sample"]: s for s in _run_json(tmp_path / "skip")["skipped"]}
    assert sorted(skipped) == ["000002", "000006"]
    batched = read_table(tmp_path / "skip" / "scores" / "2afc" / "cnn" / "psnr.csv", ("d0", "d1"))
    assert sorted(batched) == ["000000", "000001", "000003", "000004", "000005"]
    for name, values in batched.items():
        np.testing.assert_allclose(values, alone[name], rtol=1e-6, atol=1e-6)


def test_weights_download_uses_the_redirect_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    # The guard is the opener's: plain urllib.request.urlopen (which follows every redirect) is not used.
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("unguarded urlopen"))
    with pytest.raises(DownloadError, match="offline mode"):
        spips_io.open_url("http://example.invalid/x", timeout=1, local_only=True, error=DownloadError)
