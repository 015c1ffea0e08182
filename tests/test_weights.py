"""Weight files: the table, resolution order, SHA-256 checks, safe loading, offline errors, downloads.

Nothing here touches the network: downloads are served by a local HTTP server on 127.0.0.1, and
``urllib.request.urlopen`` is replaced by a failing stub wherever no network call may happen.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import pickle
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from spips_bench import weights
from spips_bench.cli import main
from spips_bench.errors import WeightsIntegrityError, WeightsUnavailableError
from spips_bench.weights import WEIGHTS, WeightFile


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch hub cache, no $SPIPS_BENCH_WEIGHTS, offline unless a test says otherwise."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(weights.ENV_WEIGHTS_DIR, raising=False)
    monkeypatch.setenv(weights.ENV_OFFLINE, "1")
    return tmp_path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail(f"a network call was made: urlopen{args}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", refuse)  # downloads use their own opener


def _tensor_file(path: Path, value: float = 1.5) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"w": torch.full((2, 3), value)}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _register(monkeypatch: pytest.MonkeyPatch, sha: str, *, url: str | None = None,
              package: tuple[str, str] | None = None, name: str = "test-file") -> WeightFile:
    wf = WeightFile(name, f"{name}.pth", url, sha, None, "test", "made by the test", package)
    monkeypatch.setitem(WEIGHTS, name, wf)
    return wf


# -- the table -------------------------------------------------------------------------------------


def test_table_entries_are_complete() -> None:
    for name, wf in WEIGHTS.items():
        assert wf.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", wf.sha256), name
        assert wf.license and wf.source and wf.size
        assert wf.url or wf.package, f"{name} has neither URL nor package copy"


def test_torchvision_entries_match_torchvision_metadata() -> None:
    # Independent source: torchvision's weights enums hold the URLs, and the file name's 8-digit prefix
    # is torchvision's own (partial) SHA-256 check.
    from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

    for name, enum in (("alexnet", AlexNet_Weights), ("vgg16", VGG16_Weights),
                       ("squeezenet1_1", SqueezeNet1_1_Weights)):
        wf = WEIGHTS[name]
        assert wf.url == enum.IMAGENET1K_V1.url
        assert wf.filename == wf.url.rsplit("/", 1)[1]
        prefix = re.search(r"-([0-9a-f]{8})\.pth$", wf.filename)
        assert prefix is not None and wf.sha256.startswith(prefix.group(1))


@pytest.mark.parametrize("name", [n for n, w in WEIGHTS.items() if w.package])
def test_packaged_files_have_the_recorded_hash(name: str, isolated: Path, no_network: None) -> None:
    wf = WEIGHTS[name]
    if weights.package_path(wf) is None:
        pytest.skip(f"package {wf.package[0] if wf.package else ''} not installed")
    path = weights.resolve(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == wf.sha256
    assert path.stat().st_size == wf.size
    state = weights.load_state_dict(name)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())


def test_package_files_are_found_without_importing_the_package(isolated: Path) -> None:
    import sys

    sys.modules.pop("stlpips_pytorch", None)
    if weights.package_path(WEIGHTS["stlpips-alex"]) is None:
        pytest.skip("stlpips-pytorch not installed")
    assert "stlpips_pytorch" not in sys.modules


# -- resolution order --------------------------------------------------------------------------------


def test_resolution_order(isolated: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    shared = isolated / "pkgroot" / "fakepkg" / "w.pth"
    sha = _tensor_file(shared)
    # the "package copy": a real importable package on sys.path
    (shared.parent / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(isolated / "pkgroot"))
    wf = _register(monkeypatch, sha, package=("fakepkg", "w.pth"))
    assert weights.resolve(wf.name) == shared
    assert weights.locate(wf.name) == ("fakepkg package", shared)

    hub = isolated / "torch-home" / "hub" / "checkpoints" / wf.filename
    hub.parent.mkdir(parents=True)
    hub.write_bytes(shared.read_bytes())
    assert weights.resolve(wf.name) == hub

    env_dir = isolated / "envdir"
    env_dir.mkdir()
    (env_dir / wf.filename).write_bytes(shared.read_bytes())
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(env_dir))
    assert weights.resolve(wf.name) == env_dir / wf.filename

    explicit = isolated / "explicit.pth"
    explicit.write_bytes(shared.read_bytes())
    assert weights.resolve(wf.name, path=explicit) == explicit


def test_is_present_never_hashes(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = isolated / "envdir"
    sha = _tensor_file(env_dir / "test-file.pth")
    _register(monkeypatch, sha)
    monkeypatch.setattr(weights, "sha256_file", lambda p: pytest.fail("is_present hashed a file"))
    assert not weights.is_present("test-file")
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(env_dir))
    assert weights.is_present("test-file")
    rows = {r["name"]: r for r in weights.status()}
    assert rows["test-file"]["present"] and rows["test-file"]["where"] == "$SPIPS_BENCH_WEIGHTS"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="lpips-alex"):
        weights.resolve("no-such-weights")


# -- integrity -----------------------------------------------------------------------------------------


def test_hash_mismatch_is_refused_and_never_loaded(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = isolated / "envdir"
    _tensor_file(env_dir / "test-file.pth")
    _register(monkeypatch, "0" * 64)
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(env_dir))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a file with a wrong hash was loaded"))
    with pytest.raises(WeightsIntegrityError) as err:
        weights.load_state_dict("test-file")
    msg = str(err.value)
    assert str(env_dir / "test-file.pth") in msg and "0" * 64 in msg


class _Payload:
    """Unpickling this creates a marker file: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickle_payload_is_refused_and_not_executed(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = isolated / "payload-ran"
    evil = isolated / "envdir" / "test-file.pth"
    evil.parent.mkdir()
    torch.save({"w": torch.zeros(1), "x": _Payload(marker)}, evil)
    # the payload is live: an ordinary unpickler would run it
    probe = isolated / "probe-ran"
    pickle.loads(pickle.dumps(_Payload(probe))).close()
    assert probe.exists()

    _register(monkeypatch, hashlib.sha256(evil.read_bytes()).hexdigest())
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(evil.parent))
    with pytest.raises(WeightsIntegrityError, match="test-file"):
        weights.load_state_dict("test-file")
    assert not marker.exists()


def test_sha256_is_cached_per_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spips_bench import io

    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    expected = hashlib.sha256(b"abc").hexdigest()
    assert io.sha256_file(f) == expected
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert io.sha256_file(f) == expected and not calls
    f.write_bytes(b"abcd")  # new size (and mtime): hashed again
    assert io.sha256_file(f) == hashlib.sha256(b"abcd").hexdigest()
    assert calls


def test_remap_keys_refuses_missing_and_unexpected_keys() -> None:
    state = {"a": torch.zeros(1), "b": torch.zeros(1), "head.x": torch.zeros(1)}
    assert set(weights.remap_keys(state, {"a": "A", "b": "B"}, source="s", ignore=("head.",))) == {"A", "B"}
    with pytest.raises(WeightsIntegrityError, match=r"unexpected \['head.x'\]"):
        weights.remap_keys(state, {"a": "A", "b": "B"}, source="s")
    with pytest.raises(WeightsIntegrityError, match=r"missing \['c'\]"):
        weights.remap_keys(state, {"a": "A", "b": "B", "c": "C"}, source="s", ignore=("head.",))


def test_load_into_is_strict() -> None:
    lin = torch.nn.Conv2d(4, 1, 1, bias=False)
    with pytest.raises(WeightsIntegrityError, match="size mismatch"):
        weights.load_into(lin, {"weight": torch.zeros(1, 5, 1, 1)}, source="s")
    with pytest.raises(WeightsIntegrityError, match="Unexpected key"):
        weights.load_into(lin, {"weight": torch.zeros(1, 4, 1, 1), "bias": torch.zeros(1)}, source="s")


# -- offline ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_missing_file_names_url_hash_and_target(how: str, isolated: Path,
                                                        monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    if how == "argument":
        monkeypatch.delenv(weights.ENV_OFFLINE)
    offline = True if how == "argument" else None
    wf = WEIGHTS["alexnet"]
    with pytest.raises(WeightsUnavailableError) as err:
        weights.resolve("alexnet", offline=offline)
    msg = str(err.value)
    target = isolated / "torch-home" / "hub" / "checkpoints" / wf.filename
    assert wf.url and wf.url in msg and wf.sha256 in msg and str(target) in msg
    assert "offline" in msg


def test_is_offline_reads_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(weights.ENV_OFFLINE, "1")
    assert weights.is_offline() and not weights.is_offline(False)
    monkeypatch.setenv(weights.ENV_OFFLINE, "0")
    assert not weights.is_offline() and weights.is_offline(True)


# -- downloads from a local server --------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_download_verifies_and_renames(isolated: Path, server: tuple[str, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    sha = _tensor_file(root / "w.pth")
    monkeypatch.delenv(weights.ENV_OFFLINE)
    _register(monkeypatch, sha, url=f"{base}/w.pth")
    state = weights.load_state_dict("test-file")
    assert torch.equal(state["w"], torch.full((2, 3), 1.5))
    hub = isolated / "torch-home" / "hub" / "checkpoints"
    assert sorted(p.name for p in hub.iterdir()) == ["test-file.pth"]
    # cached now: a second resolve does not download
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", lambda *a, **k: pytest.fail("downloaded twice"))
    assert weights.resolve("test-file") == hub / "test-file.pth"


def test_download_with_wrong_hash_leaves_nothing(isolated: Path, server: tuple[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    _tensor_file(root / "w.pth")
    monkeypatch.delenv(weights.ENV_OFFLINE)
    _register(monkeypatch, "f" * 64, url=f"{base}/w.pth")
    with pytest.raises(WeightsIntegrityError, match="f" * 64):
        weights.resolve("test-file", progress=False)
    hub = isolated / "torch-home" / "hub" / "checkpoints"
    assert not any(hub.iterdir())


def test_download_failure_is_reported(isolated: Path, server: tuple[str, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    base, _ = server
    monkeypatch.delenv(weights.ENV_OFFLINE)
    _register(monkeypatch, "a" * 64, url=f"{base}/absent.pth")
    with pytest.raises(WeightsUnavailableError, match="404"):
        weights.resolve("test-file", progress=False)


class _CutOnceHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``body``: the first response stops half-way (the connection drops); a ``Range`` request is
    answered 206 with the rest, if its ``If-Range`` carries the ETag."""

    body = b""
    etag = '"w-1"'
    requests: ClassVar[list[tuple[str | None, str | None]]] = []

    def do_GET(self) -> None:
        self.requests.append((self.headers.get("Range"), self.headers.get("If-Range")))
        body = self.body
        start = 0
        if self.headers.get("Range") and self.headers.get("If-Range") == self.etag:
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("ETag", self.etag)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.close_connection = True
        self.wfile.write(body[start:] if len(self.requests) > 1 else body[: len(body) // 2])

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_interrupted_weight_download_resumes_with_range(isolated: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sha = _tensor_file(tmp_path / "w.pth")
    body = (tmp_path / "w.pth").read_bytes()
    handler = type("Handler", (_CutOnceHandler,), {"body": body, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv(weights.ENV_OFFLINE)
        _register(monkeypatch, sha, url=f"http://127.0.0.1:{httpd.server_address[1]}/w.pth")
        path = weights.download("test-file", progress=False, backoff=0.0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    half = len(body) // 2
    assert handler.requests == [(None, None), (f"bytes={half}-", '"w-1"')]
    assert path.read_bytes() == body
    assert sorted(p.name for p in path.parent.iterdir()) == ["test-file.pth"]  # no .part, no .part.meta


# -- CLI -------------------------------------------------------------------------------------------------------


def test_cli_weights_status_lists_every_file(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for name, wf in WEIGHTS.items():
        assert re.search(rf"^{re.escape(name)}\s", out, re.M)
        assert wf.sha256[:12] in out
    assert re.search(r"^alexnet\s+missing", out, re.M)


def test_cli_fetch_offline_fails_with_instructions(isolated: Path, capsys: pytest.CaptureFixture[str],
                                                   no_network: None) -> None:
    assert main(["weights", "fetch", "alexnet", "lpips-alex", "--offline"]) == 1
    out = capsys.readouterr().out
    assert "alexnet: FAILED" in out and WEIGHTS["alexnet"].sha256 in out
    assert "lpips-alex: ok" in out or weights.package_path(WEIGHTS["lpips-alex"]) is None


def test_cli_fetch_downloads_from_local_server(isolated: Path, server: tuple[str, Path],
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    base, root = server
    sha = _tensor_file(root / "w.pth")
    monkeypatch.delenv(weights.ENV_OFFLINE)
    _register(monkeypatch, sha, url=f"{base}/w.pth")
    assert main(["weights", "fetch", "test-file", "--no-progress"]) == 0
    assert (isolated / "torch-home" / "hub" / "checkpoints" / "test-file.pth").is_file()


def test_cli_fetch_unknown_name_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "fetch", "nope"]) == 2
    assert "unknown weight file" in capsys.readouterr().err


def test_a_host_that_does_not_resolve_fails_at_once_without_retries(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    # An offline cluster without SPIPS_BENCH_OFFLINE: the name lookup fails. Retrying with backoff would
    # keep `run --metrics all` waiting for minutes per weight file; one attempt and one clear line instead.
    import socket
    import urllib.error

    from spips_bench import io as spips_io

    calls = []

    def no_dns(*args: object, **kwargs: object) -> object:
        calls.append(args)
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    monkeypatch.setattr(spips_io, "open_url", no_dns)
    monkeypatch.setattr(spips_io.time, "sleep", lambda s: pytest.fail(f"retried after a failed name lookup ({s} s)"))
    with pytest.raises(WeightsUnavailableError, match=r"cannot resolve the host .weights\.example.*no network"):
        weights.download("alexnet", dest_dir=tmp_path, url="http://weights.example/alexnet.pth", offline=False,
                         progress=False)
    assert len(calls) == 1
