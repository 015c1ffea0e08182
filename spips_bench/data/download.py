"""Download and unpack the BAPPS archives: resumable, verified, and safe to extract.

* Transfer: ``urllib.request`` into ``NAME.part``, resumed with an HTTP ``Range`` request after a
  dropped connection (a server that ignores ``Range`` and answers 200 restarts the file cleanly),
  retried with exponential backoff. The ``.part`` file becomes ``NAME`` only once its size equals the
  announced length and its SHA-256 has been checked.
* Integrity: BAPPS publishes no checksums, so the first download records the SHA-256 in
  ``ROOT/.spips-bench-manifest.json`` and every later download of the same archive must match it; or a
  hash is pinned with ``sha256=``. A mismatching file is kept as ``NAME.rejected`` for inspection and
  never extracted.
* Extraction: members are checked one by one (no absolute paths, no ``..``, no links, no device files)
  and written into a temporary folder inside ``ROOT``; only the complete tree is moved into place, so
  an interrupted extraction leaves no half-tree. A split already in place is neither downloaded nor
  extracted again.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spips_bench.errors import DownloadError, UnsafeArchiveError
from spips_bench.weights import sha256_file

DEFAULT_URL_BASE = "https://perceptual-similarity.s3.us-west-2.amazonaws.com/dataset/"
FALLBACK_URL_BASE = "https://people.eecs.berkeley.edu/~rich.zhang/projects/2018_perceptual/dataset/"
MANIFEST_NAME = ".spips-bench-manifest.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One official BAPPS archive: it unpacks ``top/`` into ``ROOT/subdir``."""

    filename: str
    subdir: str  # "" = the root itself
    top: str  # the single top-level folder inside the archive
    approx_bytes: int


ARCHIVES: dict[str, Archive] = {
    "val": Archive("twoafc_val.tar.gz", "2afc", "val", 1_100_000_000),
    "train": Archive("twoafc_train.tar.gz", "2afc", "train", 5_300_000_000),
    "jnd": Archive("jnd.tar.gz", "", "jnd", 200_000_000),
}
SPLIT_CHOICES = ("val", "train", "jnd", "all")


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_bapps` did for one archive."""

    archive: str
    target: Path  # the extracted folder, e.g. ROOT/2afc/val
    downloaded: bool
    extracted: bool
    sha256: str | None  # None when nothing was read (the split was already in place)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def download_bapps(
    root: str | os.PathLike[str],
    split: str = "val",
    url_base: str = DEFAULT_URL_BASE,
    sha256: str | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    log: Callable[[str], None] = _stderr,
    offline: bool | None = None,
) -> list[DownloadResult]:
    """Download and extract BAPPS archives into ``root`` (the folder that then holds ``2afc/``, ``jnd/``).

    Args:
        root: destination; created if missing.
        split: ``"val"`` (2AFC val, 1.1 GB), ``"train"`` (2AFC train, 5.3 GB), ``"jnd"`` (0.2 GB) or
            ``"all"``.
        url_base: folder URL holding the archives; :data:`FALLBACK_URL_BASE` is the older official host.
        sha256: expected SHA-256 (64 hex digits) of the one archive of ``split``; not with ``"all"``.
        keep_archive: keep the ``.tar.gz`` after extraction (it is deleted otherwise).
        progress: show a byte progress bar on stderr.
        retries: attempts after a failure that made no progress, before giving up.
        timeout: seconds without data before a connection counts as failed.
        backoff: seconds before the first retry; doubled after each failure, capped at 60 s.
        log: receives one line per step.
        offline: forbid downloads from any host but this machine (loopback); None reads
            ``SPIPS_BENCH_OFFLINE``. Splits already in place are still reported.

    Raises:
        ValueError: unknown split, malformed hash or URL.
        DownloadError: the transfer failed or stayed incomplete, or the SHA-256 does not match.
        UnsafeArchiveError: the archive holds unsafe members or not the expected folder.
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"unknown BAPPS split {split!r}; choose one of {', '.join(SPLIT_CHOICES)}.")
    if sha256 is not None:
        if split == "all":
            raise ValueError("--sha256 pins one archive; pass it with --split val, train or jnd, not all.")
        sha256 = sha256.strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}.")
    if not url_base.startswith(("https://", "http://")):
        raise ValueError(f"--url-base must be an http(s) URL, got {url_base!r}.")
    if retries < 0 or timeout <= 0 or backoff < 0:
        raise ValueError(
            f"need retries >= 0, timeout > 0, backoff >= 0; got {retries}, {timeout}, {backoff}."
        )
    base = url_base if url_base.endswith("/") else url_base + "/"
    from spips_bench.weights import is_offline

    host = urllib.parse.urlsplit(base).hostname or ""
    forbid = is_offline(offline) and host not in ("127.0.0.1", "localhost", "::1")
    root_path = Path(root).expanduser().resolve()
    root_path.mkdir(parents=True, exist_ok=True)
    names = list(ARCHIVES) if split == "all" else [split]
    results = []
    for name in names:
        arch = ARCHIVES[name]
        results.append(_fetch_one(root_path, arch, base + arch.filename, sha256, keep_archive, progress,
                                  retries, timeout, backoff, log, forbid))
    return results


def _fetch_one(root: Path, arch: Archive, url: str, pinned: str | None, keep: bool, progress: bool,
               retries: int, timeout: float, backoff: float, log: Callable[[str], None],
               forbid: bool) -> DownloadResult:
    target = root / arch.subdir / arch.top
    if target.is_dir():
        log(f"{target}: already present; nothing downloaded or extracted.")
        return DownloadResult(arch.filename, target, downloaded=False, extracted=False, sha256=None)
    archive = root / arch.filename
    downloaded = False
    if archive.is_file():
        log(f"{archive}: archive already downloaded; verifying it.")
        digest = sha256_file(archive)
        _check_hash(root, arch.filename, archive, archive.stat().st_size, digest, pinned)
    else:
        if forbid:
            raise DownloadError(f"{url}: downloads are disabled (offline mode, SPIPS_BENCH_OFFLINE); unset "
                                f"it, or place {arch.filename} in {root} and run again.")
        log(f"downloading {url} ({arch.approx_bytes / 1e9:.1f} GB) to {archive}")
        part = archive.with_name(archive.name + ".part")
        recorded_size = _manifest_entry(root, arch.filename).get("size")
        size = _transfer(url, part, recorded_size if isinstance(recorded_size, int) else None, progress,
                         retries, timeout, backoff)
        digest = sha256_file(part)
        _check_hash(root, arch.filename, part, size, digest, pinned)
        os.replace(part, archive)
        _record(root, arch.filename, url, size, digest)
        downloaded = True
    log(f"extracting {archive.name} into {target}")
    _extract(archive, root, arch)
    if not keep:
        archive.unlink()
    log(f"{target}: done (sha256 {digest}).")
    return DownloadResult(arch.filename, target, downloaded=downloaded, extracted=True, sha256=digest)


class _ShortRead(Exception):
    """The connection ended before the announced number of bytes arrived."""


def _transfer(url: str, part: Path, known_size: int | None, progress: bool, retries: int,
              timeout: float, backoff: float) -> int:
    """Fill ``part`` with the body of ``url``, resuming after failures; return the complete size."""
    from tqdm import tqdm

    failures = 0
    # Progress means bytes beyond the furthest point reached so far: a server that restarts every
    # response with a 200 and cuts it at the same place makes none, however much it sends.
    furthest = part.stat().st_size if part.exists() else 0
    last_error: BaseException | None = None
    for _ in range(1000):  # hard cap; each pass either adds bytes or counts as a failure
        offset = part.stat().st_size if part.exists() else 0
        if known_size is not None and offset == known_size:
            return offset
        if known_size is not None and offset > known_size:
            part.unlink()
            offset = 0
        request = urllib.request.Request(url, headers={"User-Agent": "spips-bench"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                total, offset = _expected_total(response, offset, known_size, url)
                mode = "ab" if offset else "wb"
                with open(part, mode) as out, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                                    unit_divisor=1024, desc=part.name[:-5], file=sys.stderr,
                                                    disable=not progress, leave=False) as bar:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        bar.update(len(chunk))
            size = part.stat().st_size
            if size == total:
                return size
            if size > total:
                part.unlink()
                raise DownloadError(f"{url}: received more bytes ({size}) than announced ({total}); "
                                    "the partial file was deleted, run the command again.")
            raise _ShortRead(f"connection closed at {size} of {total} bytes")
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # Range not satisfiable: the .part file is already whole, or too long
                if offset and exc.headers.get("Content-Range", "").strip() == f"bytes */{offset}":
                    return offset
                part.unlink(missing_ok=True)
                last_error = exc
            elif exc.code < 500 and exc.code != 429:
                raise DownloadError(
                    f"{url}: HTTP {exc.code} {exc.reason}. Check the URL; the older official host is "
                    f"{FALLBACK_URL_BASE} (pass it as --url-base)."
                ) from exc
            else:
                last_error = exc
        except (urllib.error.URLError, http.client.HTTPException, OSError, _ShortRead) as exc:
            if isinstance(exc, DownloadError):
                raise
            last_error = exc
        now = part.stat().st_size if part.exists() else 0
        failures = 0 if now > furthest else failures + 1
        furthest = max(furthest, now)
        if failures > retries:
            break
        time.sleep(min(60.0, backoff * 2 ** max(0, failures - 1)))
    have = part.stat().st_size if part.exists() else 0
    raise DownloadError(
        f"{url}: download incomplete after {retries} retries without progress ({last_error}); "
        f"{have} bytes are kept in {part}. Run the same command again to resume, or try --url-base "
        f"{FALLBACK_URL_BASE}."
    )


def _expected_total(response: http.client.HTTPResponse, offset: int, known_size: int | None,
                    url: str) -> tuple[int, int]:
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
                raise DownloadError(f"{url}: the server sent no Content-Length, so a complete download "
                                    "cannot be told from a cut one; use another --url-base.")
            total = known_size
        else:
            total = int(length)
    if known_size is not None and total != known_size:
        raise DownloadError(f"{url}: the server announces {total} bytes but the manifest recorded "
                            f"{known_size}; the file on the server changed. Delete its entry in "
                            f"{MANIFEST_NAME} to accept the new file.")
    return total, offset


def _manifest_path(root: Path) -> Path:
    return root / MANIFEST_NAME


def _read_manifest(root: Path) -> dict[str, dict[str, object]]:
    path = _manifest_path(root)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
        return files
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DownloadError(f"{path}: unreadable manifest ({exc}); delete it to record new hashes.") from exc


def _manifest_entry(root: Path, filename: str) -> dict[str, object]:
    return _read_manifest(root).get(filename, {})


def _record(root: Path, filename: str, url: str, size: int, digest: str) -> None:
    files = _read_manifest(root)
    if filename in files:
        return
    files[filename] = {"file": filename, "url": url, "size": size, "sha256": digest,
                       "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    tmp = _manifest_path(root).with_suffix(".tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, _manifest_path(root))


def _check_hash(root: Path, filename: str, path: Path, size: int, digest: str, pinned: str | None) -> None:
    """Refuse ``path`` when its hash differs from the pinned one or, if none is pinned, from the manifest."""
    recorded = _manifest_entry(root, filename).get("sha256")
    expected = pinned or recorded
    if expected is None or digest == expected:
        return
    rejected = root / (filename + ".rejected")
    os.replace(path, rejected)
    if pinned:
        fix = "check the hash you passed with --sha256, or leave it out to use the manifest's record."
        source = "--sha256"
    else:
        fix = (f"the server's file changed or the transfer was corrupted; run again to download a fresh "
               f"copy, or, if the change is expected, delete the {filename!r} entry of "
               f"{_manifest_path(root)} to accept the new file.")
        source = str(_manifest_path(root))
    raise DownloadError(
        f"{filename}: SHA-256 {digest} ({size} bytes) does not match {expected} from {source}. The file "
        f"was not extracted and is kept as {rejected} for inspection; {fix}"
    )


def _check_member(member: tarfile.TarInfo, archive: Path) -> str:
    """The member's safe relative path, or UnsafeArchiveError."""
    name = member.name
    where = f"{archive}: member {name!r}"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):  # POSIX or Windows drive
        raise UnsafeArchiveError(f"{where} has an absolute path; refusing to extract this archive.")
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{where} climbs out with '..'; refusing to extract this archive.")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"{where} is a link (to {member.linkname!r}); refusing to extract.")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{where} is a device, FIFO or other special file; refusing to extract.")
    return "/".join(parts)


def _extract(archive: Path, root: Path, arch: Archive) -> None:
    """Unpack ``arch.top`` of ``archive`` into ``root/arch.subdir`` via a temporary folder in ``root``."""
    dest_parent = root / arch.subdir
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(archive, mode="r|*") as tar:  # streaming: one pass over the archive
                for member in tar:
                    rel = _check_member(member, archive)
                    if not rel:
                        continue
                    if rel.split("/")[0] != arch.top:
                        raise UnsafeArchiveError(
                            f"{archive}: member {member.name!r} lies outside the expected top folder "
                            f"{arch.top!r}; this is not the official {arch.filename}."
                        )
                    member.name = rel
                    tar.extract(member, tmp, set_attrs=False, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, UnsafeArchiveError):
                raise
            raise DownloadError(f"{archive}: corrupt or truncated archive ({exc}); delete it and run the "
                                "command again.") from exc
        if not (tmp / arch.top).is_dir():
            raise UnsafeArchiveError(f"{archive}: no {arch.top}/ folder inside; this is not the official "
                                     f"{arch.filename}.")
        dest_parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / arch.top, dest_parent / arch.top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
