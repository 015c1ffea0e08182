"""The BAPPS downloader against a local HTTP server on 127.0.0.1: resume, retries, hashes, safe extraction.

No other address is ever contacted: every URL below points at the server started by the fixture, and
the offline guard of the downloader is itself tested with a URL it must refuse before connecting.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import tarfile
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spips_bench import cli
from spips_bench.data.bapps import TwoAFCDataset
from spips_bench.data.download import MANIFEST_NAME, DownloadResult, download_bapps
from spips_bench.errors import DownloadError, UnsafeArchiveError


def fetch(root: Path, split: str, url: str, **options: Any) -> list[DownloadResult]:
    """``download_bapps`` with short timeouts and backoff, no progress bar and no log lines.

    These tests are about one archive at a time: ``"val"`` here is the 2AFC val archive alone
    (``"2afc-val"``; the real ``--split val`` also fetches JND, see ``test_cli_download``).
    """
    options.setdefault("log", lambda _msg: None)
    split = "2afc-val" if split == "val" else split
    return download_bapps(root, split, url_base=url, timeout=5.0, backoff=0.01, progress=False, **options)


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def _npy(value: float) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([value], dtype=np.float32))
    return buf.getvalue()


def _tar_gz(members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def bapps_val_archive(n: int = 3, seed: int = 0) -> bytes:
    """A tiny twoafc_val.tar.gz in the official layout: val/traditional/{ref,p0,p1,judge}/..."""
    members = []
    for i in range(n):
        for k, part in enumerate(("ref", "p0", "p1")):
            members.append(_file(f"val/traditional/{part}/{i:06d}.png", _png(10 * i + k + seed)))
        members.append(_file(f"val/traditional/judge/{i:06d}.npy", _npy(i / 5)))
    # Padding makes the archive large enough that cutting it in half leaves a real partial file.
    members.append(_file("val/traditional/ref/.padding", np.random.default_rng(seed).bytes(20_000)))
    return _tar_gz(members)


class Server:
    """Serves ``files`` with Range support; ``faults`` shapes the misbehaviour under test."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.break_next = 0  # this many responses are cut after half their body
        self.always_truncate = False  # every response is cut, and Range is ignored
        self.etags: dict[str, str] = {}  # name -> ETag sent with it; If-Range is then honoured
        self.redirects: dict[str, str] = {}  # name -> Location of a 302 answered instead of the file
        self.if_range: list[str | None] = []  # the If-Range header of every request
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dataset/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                server.if_range.append(self.headers.get("If-Range"))
                name = self.path.rsplit("/", 1)[-1]
                if name in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[name])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(name)
                etag = server.etags.get(name)
                if rng and self.headers.get("If-Range") is not None and self.headers.get("If-Range") != etag:
                    rng = None  # the file changed since the validator: send all of it (RFC 9110, 13.1.5)
                if data is None or not self.path.startswith("/dataset/"):
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.always_truncate:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                if etag is not None:
                    self.send_header("ETag", etag)
                self.end_headers()
                if server.always_truncate or server.break_next > 0:
                    server.break_next -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler


def test_full_download_extract_and_manifest(server: Server, tmp_path: Path) -> None:
    archive = bapps_val_archive()
    server.files["twoafc_val.tar.gz"] = archive
    root = tmp_path / "bapps"
    [result] = fetch(root, "val", server.url)
    assert result.downloaded and result.extracted
    assert result.target == root / "2afc" / "val"
    assert result.sha256 == hashlib.sha256(archive).hexdigest()
    manifest = json.loads((root / MANIFEST_NAME).read_text())["files"]["twoafc_val.tar.gz"]
    assert manifest["size"] == len(archive) and manifest["sha256"] == result.sha256
    assert manifest["url"] == server.url + "twoafc_val.tar.gz" and manifest["date"].endswith("Z")
    ds = TwoAFCDataset(root, "val", "traditional", load_size=None)
    assert ds.names == ["000000", "000001", "000002"]
    assert ds[2]["ref"][0, 0, 0].item() == pytest.approx(20 / 255)
    # The archive is removed after extraction unless asked; no temporary or partial files remain.
    assert sorted(p.name for p in root.iterdir()) == [MANIFEST_NAME, "2afc"]


def test_second_call_makes_no_request(server: Server, tmp_path: Path) -> None:
    server.files["twoafc_val.tar.gz"] = bapps_val_archive()
    fetch(tmp_path, "val", server.url)
    count = len(server.requests)
    lines: list[str] = []
    [again] = fetch(tmp_path, "val", server.url, log=lines.append)
    assert len(server.requests) == count == 1
    assert not again.downloaded and not again.extracted
    assert "already present" in lines[0]


def test_broken_transfer_is_resumed_with_range(server: Server, tmp_path: Path) -> None:
    archive = bapps_val_archive()
    server.files["twoafc_val.tar.gz"] = archive
    server.break_next = 1
    [result] = fetch(tmp_path, "val", server.url, keep_archive=True, retries=2)
    half = len(archive) // 2
    assert server.requests == [("/dataset/twoafc_val.tar.gz", None),
                               ("/dataset/twoafc_val.tar.gz", f"bytes={half}-")]
    assert (tmp_path / "twoafc_val.tar.gz").read_bytes() == archive
    assert result.sha256 == hashlib.sha256(archive).hexdigest()
    assert (tmp_path / "2afc" / "val" / "traditional" / "judge" / "000002.npy").is_file()


def test_complete_part_file_is_finished_without_a_body(server: Server, tmp_path: Path) -> None:
    archive = bapps_val_archive()
    server.files["twoafc_val.tar.gz"] = archive
    (tmp_path / "twoafc_val.tar.gz.part").write_bytes(archive)  # a run stopped right after the transfer
    [result] = fetch(tmp_path, "val", server.url)
    assert server.requests == [("/dataset/twoafc_val.tar.gz", f"bytes={len(archive)}-")]  # answered 416
    assert result.downloaded and result.sha256 == hashlib.sha256(archive).hexdigest()
    assert (tmp_path / "2afc" / "val" / "traditional" / "ref" / "000001.png").is_file()


def test_overlong_part_file_is_restarted(server: Server, tmp_path: Path) -> None:
    archive = bapps_val_archive()
    server.files["twoafc_val.tar.gz"] = archive
    (tmp_path / "twoafc_val.tar.gz.part").write_bytes(archive + b"junk from another file")
    [result] = fetch(tmp_path, "val", server.url)
    assert [r[1] for r in server.requests] == [f"bytes={len(archive) + 22}-", None]
    assert result.sha256 == hashlib.sha256(archive).hexdigest()


def test_truncated_every_time_fails_without_final_file(server: Server, tmp_path: Path) -> None:
    server.files["twoafc_val.tar.gz"] = bapps_val_archive()
    server.always_truncate = True  # also ignores Range: every attempt restarts with a 200
    with pytest.raises(DownloadError, match="download incomplete after 2 retries"):
        fetch(tmp_path, "val", server.url, retries=2)
    # The first response brings new bytes; the next three bring none: the first failure plus 2 retries.
    assert len(server.requests) == 4
    assert not (tmp_path / "twoafc_val.tar.gz").exists()
    assert not (tmp_path / "2afc").exists()
    assert not (tmp_path / MANIFEST_NAME).exists()
    # What arrived is kept as .part only, sized as one (restarted) half body, never appended twice.
    part = tmp_path / "twoafc_val.tar.gz.part"
    assert part.stat().st_size == len(server.files["twoafc_val.tar.gz"]) // 2


def test_wrong_pinned_sha256_is_refused(server: Server, tmp_path: Path) -> None:
    server.files["jnd.tar.gz"] = _tar_gz([_file("jnd/val/cnn/p0/000000.png", _png(1))])
    with pytest.raises(DownloadError, match=r"does not match 0{64} from --sha256.*jnd\.tar\.gz\.rejected"):
        fetch(tmp_path, "jnd", server.url, sha256="0" * 64)
    assert (tmp_path / "jnd.tar.gz.rejected").read_bytes() == server.files["jnd.tar.gz"]
    assert not (tmp_path / "jnd").exists() and not (tmp_path / "jnd.tar.gz").exists()
    # The right hash is accepted; the jnd archive unpacks into the root itself.
    good = hashlib.sha256(server.files["jnd.tar.gz"]).hexdigest()
    [result] = fetch(tmp_path, "jnd", server.url, sha256=good.upper())
    assert result.target == tmp_path / "jnd" and (tmp_path / "jnd/val/cnn/p0/000000.png").is_file()


def test_size_change_against_manifest_is_refused(server: Server, tmp_path: Path) -> None:
    first = _tar_gz([_file("jnd/val/cnn/p0/000000.png", _png(1))])
    server.files["jnd.tar.gz"] = first
    fetch(tmp_path, "jnd", server.url)
    shutil.rmtree(tmp_path / "jnd")
    server.files["jnd.tar.gz"] = first + b"extra"
    with pytest.raises(DownloadError, match=f"announces {len(first) + 5} bytes but the manifest recorded "
                                            f"{len(first)}"):
        fetch(tmp_path, "jnd", server.url)
    assert not (tmp_path / "jnd").exists() and not (tmp_path / "jnd.tar.gz").exists()


def test_manifest_hash_mismatch_same_size(server: Server, tmp_path: Path) -> None:
    data = _tar_gz([_file("jnd/val/cnn/p0/000000.png", _png(1))])
    server.files["jnd.tar.gz"] = data
    fetch(tmp_path, "jnd", server.url)
    recorded = hashlib.sha256(data).hexdigest()
    shutil.rmtree(tmp_path / "jnd")
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF  # same size, different bytes
    server.files["jnd.tar.gz"] = bytes(flipped)
    with pytest.raises(DownloadError, match=f"does not match {recorded} from .*{MANIFEST_NAME}"):
        fetch(tmp_path, "jnd", server.url)
    assert (tmp_path / "jnd.tar.gz.rejected").read_bytes() == bytes(flipped)
    assert not (tmp_path / "jnd").exists()


def _hostile(kind: str, outside: Path) -> bytes:
    benign = _file("val/traditional/ref/000000.png", _png(3))
    if kind == "absolute":
        bad = _file(str(outside / "abs.txt"), b"owned")
    elif kind == "dotdot":
        bad = _file("val/../../../outside/dotdot.txt", b"owned")
    elif kind == "symlink":
        info = tarfile.TarInfo("val/traditional/link")
        info.type = tarfile.SYMTYPE
        info.linkname = str(outside)
        bad = (info, None)  # type: ignore[assignment]
    elif kind == "hardlink":
        info = tarfile.TarInfo("val/traditional/hard")
        info.type = tarfile.LNKTYPE
        info.linkname = "val/traditional/ref/000000.png"
        bad = (info, None)  # type: ignore[assignment]
    else:
        info = tarfile.TarInfo("val/traditional/dev")
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = 1, 3
        bad = (info, None)  # type: ignore[assignment]
    return _tar_gz([benign, bad])


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [("absolute", "absolute path"), ("dotdot", r"climbs out with '\.\.'"), ("symlink", "is a link"),
     ("hardlink", "is a link"), ("device", "device")],
)
def test_hostile_archive_is_refused(server: Server, tmp_path: Path, kind: str, pattern: str) -> None:
    outside = tmp_path / "outside"
    root = tmp_path / "deep" / "er" / "root"
    server.files["twoafc_val.tar.gz"] = _hostile(kind, outside)
    with pytest.raises(UnsafeArchiveError, match=pattern):
        fetch(root, "val", server.url)
    assert not outside.exists()
    # Nothing outside the root, and inside it no half-tree and no temporary folder. The archive, never
    # extracted, is set aside and not recorded in the manifest.
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["deep", "er", "root", "twoafc_val.tar.gz.rejected"])


def test_archive_without_the_expected_folder(server: Server, tmp_path: Path) -> None:
    server.files["twoafc_val.tar.gz"] = _tar_gz([_file("train/cnn/ref/000000.png", _png(1))])
    with pytest.raises(UnsafeArchiveError, match="outside the expected top folder 'val'"):
        fetch(tmp_path, "val", server.url)
    assert not (tmp_path / "2afc").exists()


def test_http_errors_and_bad_arguments(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"HTTP 404.*people\.eecs\.berkeley\.edu"):
        fetch(tmp_path, "val", server.url)
    assert len(server.requests) == 1  # a 404 is not retried
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        fetch(tmp_path, "val", server.url, sha256="abc")
    with pytest.raises(ValueError, match="not all"):
        fetch(tmp_path, "all", server.url, sha256="0" * 64)
    with pytest.raises(ValueError, match="unknown BAPPS split 'test'"):
        fetch(tmp_path, "test", server.url)
    with pytest.raises(ValueError, match="http"):
        fetch(tmp_path, "val", "ftp://127.0.0.1/")


def test_offline_mode_refuses_remote_hosts_before_connecting(tmp_path: Path) -> None:
    # conftest sets SPIPS_BENCH_OFFLINE=1; the guard must fire before any socket is opened.
    with pytest.raises(DownloadError, match="offline"):
        fetch(tmp_path, "jnd", "https://example.invalid/dataset/")
    assert list(tmp_path.iterdir()) == []


def test_cli_download(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server.files["twoafc_val.tar.gz"] = bapps_val_archive()
    server.files["jnd.tar.gz"] = _tar_gz([_file("jnd/val/cnn/p0/000000.png", _png(1))])
    args = ["download", "bapps", "--split", "val", "--root", str(tmp_path), "--url-base", server.url,
            "--no-progress"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    # --split val fetches what `run --split val` reads: the 2AFC val and the JND archives.
    assert out.count("downloaded and extracted") == 2 and "twoafc_val.tar.gz" in out and "jnd.tar.gz" in out
    assert (tmp_path / "2afc" / "val" / "traditional").is_dir() and (tmp_path / "jnd" / "val" / "cnn").is_dir()
    assert cli.main(args) == 0
    assert capsys.readouterr().out.count("already present") == 2
    assert len(server.requests) == 2
    bad_hash = [*args[:4], "--root", str(tmp_path / "x"), "--url-base", server.url, "--sha256", "zz"]
    assert cli.main(bad_hash) == 2
    assert "64 hexadecimal digits" in capsys.readouterr().err
