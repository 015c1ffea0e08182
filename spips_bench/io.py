"""Local file I/O shared by the package: the one atomic writer, the one SHA-256 helper, the one downloader.

Every file the package writes whole goes through :func:`atomic_path` (or its shorthands
:func:`atomic_write_text` and :func:`atomic_write_bytes`): the content goes to a temporary file in the
same folder, is flushed to the disk (``fsync``), renamed over the target, and the folder is synced so
that the rename survives a power cut. A reader, or a process killed half-way, sees either the old file
or the new one, never a part. A file produced elsewhere and then moved into place (a verified download)
is moved with :func:`replace_durably`.

Every download (BAPPS archives, weight files) goes through :func:`fetch`: resumable with ``Range`` and
``If-Range``, retried with backoff, and, through :func:`open_url`, kept on this machine in offline mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from spips_bench import settings
from spips_bench.errors import StoreWriteError, write_failure_fix

#: Suffix of the temporary files of :func:`atomic_path`; a folder's leftovers are ``.<name>.*<suffix>``.
TEMP_SUFFIX = ".tmp"

#: Turns a failed local write of a path into the error to raise; None re-raises the ``OSError`` itself.
WriteFailure = Callable[[Path, OSError], BaseException] | None


def write_failure(path: Path, exc: OSError) -> StoreWriteError:
    """The error for a result file that cannot be written: the file, the system's reason and the way out."""
    return StoreWriteError(
        f"{path}: cannot write ({exc.strerror or exc}); {write_failure_fix(exc, '--out')}, then rerun the "
        "same command: everything stored before is intact and the run resumes from it."
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to the disk."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = TEMP_SUFFIX,
                error: WriteFailure = write_failure) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write the whole file to; on success it replaces ``path``.

    For writers that take a file name (``safetensors.torch.save_file``, ``Figure.savefig``). On a normal
    exit the temporary file is synced to the disk, renamed over ``path`` and the folder is synced; on an
    exception it is removed and ``path`` keeps its previous content. ``suffix`` ends the temporary name
    (a figure writer that picks the format from the name needs e.g. ``".tmp.png"``).

    Raises:
        StoreWriteError: (with the default ``error``) the file cannot be written (disk full, no
            permission); the previous version of ``path``, if any, is left as it was and no temporary
            file remains. With ``error=None`` the ``OSError`` itself.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        finally:
            os.close(fd)
    except OSError as exc:
        if error is None:
            raise
        raise error(target, exc) from exc
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and error is not None:
            raise error(target, exc) from exc
        raise
    # The rename itself must reach the disk too, or a power cut can leave the old name behind.
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, error: WriteFailure = write_failure) -> None:
    """Write ``data`` to ``path`` so that the file is always complete (see :func:`atomic_path`).

    Raises:
        StoreWriteError: (with the default ``error``) the file cannot be written (disk full, no
            permission); the previous version of ``path``, if any, is left as it was.
    """
    with atomic_path(path, error=error) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, error: WriteFailure = write_failure) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` so that the file is always complete.

    Raises:
        StoreWriteError: (with the default ``error``) the file cannot be written (disk full, no
            permission); the previous version of ``path``, if any, is left as it was and no temporary
            file remains.
    """
    with atomic_path(path, error=error) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def replace_durably(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move the finished file ``src`` over ``dst`` (same file system) and sync both to the disk.

    Raises:
        OSError: the file cannot be synced or renamed; ``src`` is left in place.
    """
    _fsync_file(os.fspath(src))
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


# -- hashing -----------------------------------------------------------------------------------------

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 lower-case hex digits."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file as 64 lower-case hex digits; cached per (path, size, mtime) in this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _HASH_CACHE[key] = digest
    return digest


# -- downloads -----------------------------------------------------------------------------------------

#: The hosts offline mode lets a download reach: this machine.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_CHUNK = 1 << 20


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (the only host offline mode lets a download reach)."""
    return (urllib.parse.urlsplit(url).hostname or "") in LOOPBACK_HOSTS


class _RedirectGuard(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib, but in offline mode refuses one to another host before connecting."""

    def __init__(self, local_only: bool, error: type[Exception]) -> None:
        super().__init__()
        self.local_only = local_only
        self.error = error

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if self.local_only and not is_loopback_url(newurl):
            fp.close()
            raise self.error(
                f"{req.full_url}: the server redirects (HTTP {code}) to {newurl}, which is not this machine; "
                f"offline mode (${settings.OFFLINE} or --offline) forbids downloads from other hosts, so no "
                "connection was made. Unset it to allow the download, or copy the file here by hand."
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def open_url(request: str | urllib.request.Request, *, timeout: float, local_only: bool,
             error: type[Exception]) -> Any:
    """``urlopen`` whose every redirect is checked: with ``local_only`` (offline mode) a URL or a redirect
    that leaves this machine raises ``error`` before any connection to that host is made.

    Raises:
        error: with ``local_only``, the URL or a redirect points at another host.
        urllib.error.URLError: the connection or the request failed (``HTTPError`` for an HTTP error).
    """
    url = request.full_url if isinstance(request, urllib.request.Request) else request
    if local_only and not is_loopback_url(url):
        raise error(f"{url}: offline mode (${settings.OFFLINE} or --offline) forbids downloads from other hosts; "
                    "no connection was made. Unset it to allow the download.")
    return urllib.request.build_opener(_RedirectGuard(local_only, error)).open(request, timeout=timeout)


@dataclass(frozen=True)
class FetchAdvice:
    """The caller's part of :func:`fetch`'s messages: what the user can do in each failure.

    Attributes:
        http: after ``"URL: HTTP 404 Not Found."``, for an HTTP error that retrying cannot fix.
        retry: after ``"N bytes are kept in PART."``, once the retries are spent without progress.
        no_length: after the server sent no Content-Length (and no size is known).
        size_changed: after ``"the server announces N bytes but"``, when it differs from ``known_size``;
            ``{size}`` is replaced by the known size.
        write_option: the option that picks another place to write to, for local write failures.
    """

    http: str
    retry: str
    no_length: str
    size_changed: str
    write_option: str


class _ShortRead(Exception):
    """The connection ended before the announced number of bytes arrived."""


_E = TypeVar("_E", bound=Exception)


def write_error(error: type[_E], exc: OSError, path: Path, option: str, kept: str = "") -> _E:
    """A local write failure (disk full, read-only or not writable folder) as one line with its fix.

    Such a failure is never retried as if it were the network's, and never blamed on the file received.
    """
    tail = f" {kept}" if kept else ""
    return error(f"{path}: cannot write ({exc.strerror or exc}); {write_failure_fix(exc, option)}, "
                 f"then run the same command again.{tail}")


def fetch(url: str, part: Path, *, advice: FetchAdvice, error: type[Exception], known_size: int | None = None,
          progress: bool = True, retries: int = 5, timeout: float = 60.0, backoff: float = 1.0,
          local_only: bool = False, desc: str | None = None) -> tuple[int, str]:
    """Fill ``part`` with the body of ``url``, resuming after failures; return its size and SHA-256.

    Bytes already in ``part`` (from an earlier, interrupted call) are kept and the transfer resumes
    with an HTTP ``Range`` request. A resumed request carries ``If-Range`` with the validator (ETag or
    Last-Modified) of the response that started ``part``, kept in ``PART.meta``: when the file on the
    server changed since, the server answers 200 with the whole new file, which replaces ``part``
    instead of being spliced onto it (so does a server that ignores ``Range``). A failure that made no
    progress is retried ``retries`` times, after ``backoff`` seconds doubled each time (at most 60 s).
    ``part`` is complete once its size equals the announced length; checking its hash and moving it
    into place is the caller's part.

    Raises:
        error: the transfer stayed incomplete after the retries (``part`` is kept for the next call),
            an HTTP error that retrying cannot fix, a size that differs from ``known_size``, a local
            write failure (disk full, read-only folder; never retried), or, with ``local_only``, a URL
            or redirect to another host (no connection is made).
    """
    from tqdm import tqdm

    failures = 0
    # Progress means bytes beyond the furthest point reached so far: a server that restarts every
    # response with a 200 and cuts it at the same place makes none, however much it sends.
    furthest = part.stat().st_size if part.exists() else 0
    last_error: BaseException | None = None
    meta = part.with_name(part.name + ".meta")
    for _ in range(1000):  # hard cap; each pass either adds bytes or counts as a failure
        offset = part.stat().st_size if part.exists() else 0
        if known_size is not None and offset == known_size:
            meta.unlink(missing_ok=True)
            return offset, sha256_file(part)
        if known_size is not None and offset > known_size:
            part.unlink()
            meta.unlink(missing_ok=True)
            offset = 0
        request = urllib.request.Request(url, headers={"User-Agent": "spips-bench"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
            validator = _read_part_meta(meta).get("validator")
            if isinstance(validator, str) and validator:
                request.add_header("If-Range", validator)
        try:
            with open_url(request, timeout=timeout, local_only=local_only, error=error) as response:
                total, offset = _expected_total(response, offset, known_size, url, advice, error)
                mode = "ab" if offset else "wb"
                if not offset:
                    _write_part_meta(meta, url, response, advice, error)
                try:
                    out = open(part, mode)  # noqa: SIM115 (closed below; write errors are told apart)
                except OSError as exc:
                    raise write_error(error, exc, part, advice.write_option) from exc
                with out, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                               desc=desc or part.name.removesuffix(".part"), file=sys.stderr,
                               disable=not progress, leave=False) as bar:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        try:
                            out.write(chunk)
                        except OSError as exc:
                            raise write_error(error, exc, part, advice.write_option,
                                              "The bytes received so far are kept and the download resumes "
                                              "from there.") from exc
                        bar.update(len(chunk))
            size = part.stat().st_size
            if size == total:
                meta.unlink(missing_ok=True)
                return size, sha256_file(part)
            if size > total:
                part.unlink()
                meta.unlink(missing_ok=True)
                raise error(f"{url}: received more bytes ({size}) than announced ({total}); "
                            "the partial file was deleted, run the command again.")
            raise _ShortRead(f"connection closed at {size} of {total} bytes")
        except error:
            raise
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # Range not satisfiable: the .part file is already whole, or too long
                if offset and exc.headers.get("Content-Range", "").strip() == f"bytes */{offset}":
                    meta.unlink(missing_ok=True)
                    return offset, sha256_file(part)
                part.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
                last_error = exc
            elif exc.code < 500 and exc.code != 429:
                raise error(f"{url}: HTTP {exc.code} {exc.reason}. {advice.http}") from exc
            else:
                last_error = exc
        except (urllib.error.URLError, http.client.HTTPException, OSError, _ShortRead) as exc:
            if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, socket.gaierror):
                # The host name does not resolve: no network here (an offline cluster) or a wrong host.
                # Retrying cannot help and would keep an offline user waiting for minutes.
                raise error(f"{url}: cannot resolve the host {urllib.parse.urlsplit(url).hostname!r} "
                            f"({exc.reason.strerror or exc.reason}): this machine has no network, or the "
                            f"address is wrong. {advice.retry}") from exc
            last_error = exc
        now = part.stat().st_size if part.exists() else 0
        failures = 0 if now > furthest else failures + 1
        furthest = max(furthest, now)
        if failures > retries:
            break
        time.sleep(min(60.0, backoff * 2 ** max(0, failures - 1)))
    have = part.stat().st_size if part.exists() else 0
    raise error(f"{url}: download incomplete after {retries} retries without progress ({last_error}); "
                f"{have} bytes are kept in {part}. {advice.retry}")


def _read_part_meta(meta: Path) -> dict[str, object]:
    """What the response that started a ``.part`` file said about it; empty when unknown or unreadable."""
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_part_meta(meta: Path, url: str, response: http.client.HTTPResponse, advice: FetchAdvice,
                     error: type[Exception]) -> None:
    """Keep the validator of the response that starts a ``.part`` file, for ``If-Range`` on resumption.

    A weak ETag (``W/...``) may not be used with ``If-Range``; Last-Modified is the fallback. Without
    either the file is resumed with ``Range`` alone.
    """
    etag = (response.headers.get("ETag") or "").strip()
    validator = etag if etag and not etag.startswith("W/") else (response.headers.get("Last-Modified") or "")
    try:
        if validator:
            meta.write_text(json.dumps({"url": url, "validator": validator.strip()}) + "\n", encoding="utf-8")
        else:
            meta.unlink(missing_ok=True)
    except OSError as exc:
        raise write_error(error, exc, meta, advice.write_option) from exc


def _expected_total(response: http.client.HTTPResponse, offset: int, known_size: int | None, url: str,
                    advice: FetchAdvice, error: type[Exception]) -> tuple[int, int]:
    """The full size of the file and the offset this response starts at (0 when it restarts)."""
    length = response.headers.get("Content-Length")
    if offset and response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        try:
            span, total_text = content_range.split(" ", 1)[1].split("/")
            start = int(span.split("-")[0])
            total = int(total_text)
        except (IndexError, ValueError) as exc:
            raise _ShortRead(f"unusable Content-Range {content_range!r}") from exc
        if start != offset:
            raise _ShortRead(f"server resumed at byte {start}, not {offset}")
    else:  # 200: the server ignored Range (or none was sent); start the file again
        offset = 0
        if length is None:
            if known_size is None:
                raise error(f"{url}: the server sent no Content-Length, so a complete download cannot be "
                            f"told from a cut one; {advice.no_length}")
            total = known_size
        else:
            total = int(length)
    if known_size is not None and total != known_size:
        raise error(f"{url}: the server announces {total} bytes but {advice.size_changed.format(size=known_size)}")
    return total, offset
