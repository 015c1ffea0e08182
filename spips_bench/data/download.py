"""Download and unpack the BAPPS archives: resumable, verified, and safe to extract.

* Transfer: :func:`spips_bench.io.fetch` into ``NAME.part``, resumed with an HTTP ``Range`` request after a
  dropped connection, with ``If-Range`` carrying the validator (ETag or Last-Modified) of the response
  that started the file, so a file changed on the server is sent whole instead of being spliced onto
  the old part (a server that ignores ``Range`` and answers 200 restarts the file cleanly); retried
  with exponential backoff. The ``.part`` file becomes ``NAME`` only once its size equals the
  announced length and its SHA-256 has been checked. A local write failure (disk full, read-only
  folder) stops at once with its own message; it is not retried as a network failure.
* Offline mode: only this machine (loopback) may be contacted, and every redirect is checked: one to
  another host is refused before any connection is made.
* Integrity: BAPPS publishes no checksums, so the first archive that downloads *and extracts* records
  its size and SHA-256 in ``ROOT/.spips-bench-manifest.json``, and every later download of the same
  archive must match it; or a hash is pinned with ``sha256=``. A mismatching file is kept as
  ``NAME.rejected`` for inspection and never extracted; so is a first download that does not extract
  (an error page, a spliced transfer), which is not recorded, so the next run downloads a fresh copy.
* Extraction: members are checked one by one (no absolute paths, no ``..``, no links, no device files,
  no more bytes or members than :func:`extraction_limits` allows for the archive's size) and written
  into a temporary folder inside ``ROOT``; only the complete tree is moved into place, so an
  interrupted extraction leaves no half-tree. A full disk during extraction keeps the archive. A split
  already in place is neither downloaded nor extracted again.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spips_bench.errors import DownloadError, UnsafeArchiveError
from spips_bench.io import (
    FetchAdvice,
    atomic_write_text,
    fetch,
    is_loopback_url,
    replace_durably,
    sha256_file,
    write_error,
)

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
#: The archives each ``--split`` fetches: ``val`` is everything ``spips-bench run --split val`` reads.
SPLIT_ARCHIVES: dict[str, tuple[str, ...]] = {
    "val": ("val", "jnd"),
    "2afc-val": ("val",),
    "train": ("train",),
    "jnd": ("jnd",),
    "all": ("val", "train", "jnd"),
}
SPLIT_CHOICES = tuple(SPLIT_ARCHIVES)


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
        split: ``"val"`` (2AFC val and JND val, 1.3 GB: what ``spips-bench run --split val`` reads),
            ``"2afc-val"`` (2AFC val only, 1.1 GB), ``"train"`` (2AFC train, 5.3 GB), ``"jnd"`` (0.2 GB) or
            ``"all"`` (see :data:`SPLIT_ARCHIVES`).
        url_base: folder URL holding the archives; :data:`FALLBACK_URL_BASE` is the older official host.
        sha256: expected SHA-256 (64 hex digits) of the one archive of ``split``; only with a split of one
            archive (``"2afc-val"``, ``"train"``, ``"jnd"``).
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
        sha256 = sha256.strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}.")
        if len(SPLIT_ARCHIVES[split]) != 1:
            files = " and ".join(ARCHIVES[a].filename for a in SPLIT_ARCHIVES[split])
            raise ValueError(f"--sha256 pins one archive, but --split {split} fetches {files}, not all of one "
                             "hash; pin each with --split 2afc-val, train or jnd.")
    if not url_base.startswith(("https://", "http://")):
        raise ValueError(f"--url-base must be an http(s) URL, got {url_base!r}.")
    if retries < 0 or timeout <= 0 or backoff < 0:
        raise ValueError(
            f"need retries >= 0, timeout > 0, backoff >= 0; got {retries}, {timeout}, {backoff}."
        )
    base = url_base if url_base.endswith("/") else url_base + "/"
    from spips_bench.weights import is_offline

    local_only = is_offline(offline)
    forbid = local_only and not is_loopback_url(base)
    root_path = Path(root).expanduser().resolve()
    try:
        root_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(exc, root_path, "") from exc
    names = list(SPLIT_ARCHIVES[split])
    results = []
    for name in names:
        arch = ARCHIVES[name]
        results.append(_fetch_one(root_path, arch, base + arch.filename, sha256, keep_archive, progress,
                                  retries, timeout, backoff, log, forbid, local_only))
    return results


def _fetch_one(root: Path, arch: Archive, url: str, pinned: str | None, keep: bool, progress: bool,
               retries: int, timeout: float, backoff: float, log: Callable[[str], None],
               forbid: bool, local_only: bool) -> DownloadResult:
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
        size, digest = fetch(url, part, advice=_ADVICE, error=DownloadError,
                             known_size=recorded_size if isinstance(recorded_size, int) else None,
                             progress=progress, retries=retries, timeout=timeout, backoff=backoff,
                             local_only=local_only)
        _check_hash(root, arch.filename, part, size, digest, pinned)
        try:
            replace_durably(part, archive)
        except OSError as exc:
            raise _write_error(exc, archive, f"The verified download is kept as {part}.") from exc
        downloaded = True
    log(f"extracting {archive.name} into {target}")
    try:
        _extract(archive, root, arch)
    except (_CorruptArchiveError, UnsafeArchiveError) as exc:
        if pinned is None and _manifest_entry(root, arch.filename).get("sha256") != digest:
            # Never extracted before, so nothing vouches for these bytes (an error page served with 200,
            # a resumed transfer spliced onto another file): set them aside so that a rerun downloads
            # a fresh copy instead of trusting them.
            rejected = root / (arch.filename + ".rejected")
            os.replace(archive, rejected)
            advice = (f"The archive was moved to {rejected} for inspection and not recorded in {MANIFEST_NAME}; "
                      "running the command again downloads a fresh copy.")
        else:
            advice = "Delete it and run the command again."
        raise type(exc)(f"{exc} {advice}") from exc
    if downloaded:
        _record(root, arch.filename, url, archive.stat().st_size, digest)
    if not keep:
        archive.unlink()
    log(f"{target}: done (sha256 {digest}).")
    return DownloadResult(arch.filename, target, downloaded=downloaded, extracted=True, sha256=digest)


_ADVICE = FetchAdvice(
    http=f"Check the URL; the older official host is {FALLBACK_URL_BASE} (pass it as --url-base).",
    retry=f"Run the same command again to resume, or try --url-base {FALLBACK_URL_BASE}.",
    no_length="use another --url-base.",
    size_changed=(f"the manifest recorded {{size}}; the file on the server changed. Delete its entry in "
                  f"{MANIFEST_NAME} to accept the new file."),
    write_option="--root",
)


def _write_error(exc: OSError, path: Path, kept: str) -> DownloadError:
    """A local write failure (disk full, read-only or not writable folder) as one line with its fix.

    Such a failure is never retried as if it were the network's, and never blamed on the archive.
    """
    return write_error(DownloadError, exc, path, "--root", kept)


_LOCAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


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
    """Record the size and SHA-256 of an archive, once it has been extracted successfully.

    Only then: a first transfer that is not the archive (an error page, a spliced resume) must not
    become the reference every later download is held to.
    """
    files = _read_manifest(root)
    if filename in files:
        return
    files[filename] = {"file": filename, "url": url, "size": size, "sha256": digest,
                       "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    atomic_write_text(_manifest_path(root), json.dumps({"files": files}, indent=1, sort_keys=True) + "\n",
                      error=lambda path, exc: _write_error(exc, path, "The extracted tree is in place."))


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


class _CorruptArchiveError(DownloadError):
    """The archive's bytes cannot be unpacked (not gzip/tar, truncated, damaged)."""


# Caps on what one archive may unpack to. The official archives hold PNG files, already compressed, so
# they expand by a few percent; these caps only stop an archive built to fill the disk (a small file of
# zeros that inflates a thousandfold) or its inode table (a flood of empty members).
MAX_EXPANSION = 10  # total member bytes <= MAX_EXPANSION * archive size + EXPANSION_SLACK
EXPANSION_SLACK = 1 << 20
BYTES_PER_MEMBER = 1024  # members <= max(MIN_MEMBER_CAP, archive size // BYTES_PER_MEMBER)
MIN_MEMBER_CAP = 1000


def extraction_limits(archive_size: int) -> tuple[int, int]:
    """``(max total bytes, max members)`` that an archive of ``archive_size`` bytes may unpack to."""
    return (MAX_EXPANSION * archive_size + EXPANSION_SLACK,
            max(MIN_MEMBER_CAP, archive_size // BYTES_PER_MEMBER))


def _extract(archive: Path, root: Path, arch: Archive) -> None:
    """Unpack ``arch.top`` of ``archive`` into ``root/arch.subdir`` via a temporary folder in ``root``.

    Raises:
        UnsafeArchiveError: an unsafe member, one outside ``arch.top``, or more bytes or members than
            :func:`extraction_limits` allows (checked from each member's header, before it is written).
        DownloadError: the archive is corrupt (:class:`_CorruptArchiveError`), or the root cannot be
            written (disk full, read-only); the archive is kept in the latter case.
    """
    dest_parent = root / arch.subdir
    archive_size = archive.stat().st_size
    max_bytes, max_members = extraction_limits(archive_size)
    kept = f"The archive {archive} is intact and kept: nothing has to be downloaded again."
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    except OSError as exc:
        raise _write_error(exc, root, kept) from exc
    try:
        try:
            total = members = 0
            with tarfile.open(archive, mode="r|*") as tar:  # streaming: one pass over the archive
                for member in tar:
                    members += 1
                    total += member.size if member.isfile() else 0
                    if members > max_members or total > max_bytes:
                        what = (f"more than {max_members:,} members" if members > max_members
                                else f"more than {max_bytes:,} bytes ({MAX_EXPANSION}x its own size)")
                        raise UnsafeArchiveError(
                            f"{archive}: it would unpack to {what}, a {archive_size:,}-byte archive "
                            f"(at member {member.name!r}); the official {arch.filename} expands little, so "
                            "this is not it. Refusing to extract; nothing was kept."
                        )
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
            if isinstance(exc, OSError) and exc.errno in _LOCAL_WRITE_ERRNOS:
                raise _write_error(exc, dest_parent, kept) from exc
            raise _CorruptArchiveError(f"{archive}: corrupt or truncated archive ({exc}).") from exc
        if not (tmp / arch.top).is_dir():
            raise UnsafeArchiveError(f"{archive}: no {arch.top}/ folder inside; this is not the official "
                                     f"{arch.filename}.")
        try:
            dest_parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / arch.top, dest_parent / arch.top)
        except OSError as exc:
            raise _write_error(exc, dest_parent, kept) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- datasets published as one zip archive (KADID-10k) ----------------------------------------------


@dataclass(frozen=True)
class ZipDataset:
    """A dataset published as one zip archive that unpacks its files into the root.

    Attributes:
        name: the dataset's registry name (``"kadid10k"``).
        url: the archive's official URL (the card's ``[archive] url``).
        filename: the archive's file name in the root while it downloads.
        expect: the entries the unpacked root must hold; the first one also finds the archive's top
            folder (the archive may hold them at its top or inside one folder).
        sha256: the card's published hash, ``""`` when none is published (then ``--sha256`` is needed).
    """

    name: str
    url: str
    filename: str
    expect: tuple[str, ...]
    sha256: str = ""


def zip_dataset(name: str) -> ZipDataset:
    """The :class:`ZipDataset` of the card ``name`` (its ``[archive]`` table and its layout's entries).

    Raises:
        ValueError: the card has no ``[archive]`` table (no stable public archive): the message gives its steps.
    """
    from spips_bench.data.cards import load_card
    from spips_bench.data.mos import LAYOUTS

    card = load_card(name)
    archive = card.get("archive")
    if not archive:
        steps = " ".join(f"{i}. {s}" for i, s in enumerate(card.get("steps", []), start=1))
        raise ValueError(f"{card['title']} has no public archive that spips-bench can download; get it by hand: "
                         f"{steps}")
    layout = LAYOUTS[card["layout"]]
    expect = tuple(dict.fromkeys((layout.labels, layout.ref_folder, layout.dist_folder)))
    return ZipDataset(card["name"], archive["url"], archive["filename"], expect, archive.get("sha256", ""))


def download_zip_dataset(
    root: str | os.PathLike[str],
    dataset: ZipDataset,
    *,
    url: str | None = None,
    sha256: str | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    log: Callable[[str], None] = _stderr,
    offline: bool | None = None,
) -> DownloadResult:
    """Download ``dataset``'s zip archive into ``root`` (resumable), check its SHA-256 and unpack it there.

    The archive is unpacked only when its SHA-256 equals a trusted one: ``sha256``, the card's, or the one
    recorded in ``ROOT/.spips-bench-manifest.json`` by an earlier successful unpacking. When none exists
    (KADID-10k publishes no hash), the archive is downloaded, kept, and a :class:`DownloadError` shows its
    SHA-256 so that it can be compared with a trusted copy and passed as ``sha256`` on the next call,
    which uses the kept file. Extraction refuses absolute paths, ``..``, links and special files, and
    more bytes or members than :func:`extraction_limits` allows; it writes into a temporary folder in
    ``root`` and moves the unpacked entries into ``root`` only when all of them are complete (macOS
    ``__MACOSX/`` members are skipped).

    Args:
        root: destination (the dataset's root once unpacked); created if missing.
        dataset: :func:`zip_dataset` of the card.
        url: another URL of the same archive (default: the card's).
        sha256: the archive's expected SHA-256 (64 hex digits).
        keep_archive, progress, retries, timeout, backoff, log, offline: as in :func:`download_bapps`.

    Raises:
        ValueError: a malformed hash or URL.
        DownloadError: the transfer failed, the hash does not match (the file is kept as
            ``NAME.rejected``) or no trusted hash exists yet (the file is kept as ``NAME``).
        UnsafeArchiveError: an unsafe member, or not the expected entries inside.
    """
    pinned = (sha256 or dataset.sha256 or "").strip().lower() or None
    if pinned is not None and (len(pinned) != 64 or any(c not in "0123456789abcdef" for c in pinned)):
        raise ValueError(f"--sha256 must be 64 hexadecimal digits, got {pinned!r}.")
    url = url or dataset.url
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"--url must be an http(s) URL, got {url!r}.")
    from spips_bench.weights import is_offline

    local_only = is_offline(offline)
    root_path = Path(root).expanduser().resolve()
    try:
        root_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(exc, root_path, "") from exc
    if all((root_path / e).exists() for e in dataset.expect):
        log(f"{root_path}: {', '.join(dataset.expect)} already present; nothing downloaded or extracted.")
        return DownloadResult(dataset.filename, root_path, downloaded=False, extracted=False, sha256=None)
    archive = root_path / dataset.filename
    downloaded = False
    if archive.is_file():
        log(f"{archive}: archive already downloaded; verifying it.")
        size, digest = archive.stat().st_size, sha256_file(archive)
        path = archive
    else:
        if local_only and not is_loopback_url(url):
            raise DownloadError(f"{url}: downloads are disabled (offline mode, SPIPS_BENCH_OFFLINE); unset it, or "
                                f"place {dataset.filename} in {root_path} and run again.")
        log(f"downloading {url} to {archive}")
        path = archive.with_name(archive.name + ".part")
        advice = FetchAdvice(http="Check the URL (--url), or download the archive by hand into the root.",
                             retry="Run the same command again to resume.", no_length="use another --url.",
                             size_changed=(f"the manifest recorded {{size}}; the file on the server changed. Delete "
                                           f"its entry in {MANIFEST_NAME} to accept the new file."),
                             write_option="--root")
        recorded_size = _manifest_entry(root_path, dataset.filename).get("size")
        size, digest = fetch(url, path, advice=advice, error=DownloadError,
                             known_size=recorded_size if isinstance(recorded_size, int) else None,
                             progress=progress, retries=retries, timeout=timeout, backoff=backoff,
                             local_only=local_only)
        downloaded = True
    if pinned is None and _manifest_entry(root_path, dataset.filename).get("sha256") is None:
        if path != archive:
            replace_durably(path, archive)
        raise DownloadError(
            f"{archive}: {size:,} bytes with SHA-256 {digest}, kept but not unpacked: no SHA-256 of "
            f"{dataset.filename} is published, so spips-bench unpacks it only against one you pin. Compare "
            f"{digest} with a copy you trust (docs/datasets.md says how), then run `spips-bench download "
            f"{dataset.name} --root {root_path} --sha256 {digest}`; it uses this file without downloading it again.")
    _check_hash(root_path, dataset.filename, path, size, digest, pinned)
    if path != archive:
        try:
            replace_durably(path, archive)
        except OSError as exc:
            raise _write_error(exc, archive, f"The verified download is kept as {path}.") from exc
    log(f"extracting {archive.name} into {root_path}")
    _extract_zip(archive, root_path, dataset)
    _record(root_path, dataset.filename, url, size, digest)  # kept as it is when already recorded
    if not keep_archive:
        archive.unlink()
    log(f"{root_path}: done (sha256 {digest}).")
    return DownloadResult(dataset.filename, root_path, downloaded=downloaded, extracted=True, sha256=digest)


def _check_zip_member(info: zipfile.ZipInfo, archive: Path) -> str:
    """The member's safe relative path (``""`` for one to skip), or UnsafeArchiveError."""
    name = info.filename
    where = f"{archive}: member {name!r}"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{where} has an absolute path; refusing to extract this archive.")
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{where} climbs out with '..'; refusing to extract this archive.")
    # The file type is in the high bits of external_attr for members written on Unix (create_system 3);
    # members of other systems, or with permission bits only, are plain files or folders.
    kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
    if kind == stat.S_IFLNK:
        raise UnsafeArchiveError(f"{where} is a link; refusing to extract.")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchiveError(f"{where} is a device, FIFO or other special file; refusing to extract.")
    return "" if parts[:1] == ["__MACOSX"] else "/".join(parts)


def _extract_zip(archive: Path, root: Path, dataset: ZipDataset) -> None:
    """Unpack ``archive`` into a temporary folder in ``root``, then move its entries into ``root``."""
    kept = f"The archive {archive} is intact and kept: nothing has to be downloaded again."
    max_bytes, max_members = extraction_limits(archive.stat().st_size)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    except OSError as exc:
        raise _write_error(exc, root, kept) from exc
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                total = sum(i.file_size for i in infos)
                if len(infos) > max_members or total > max_bytes:
                    raise UnsafeArchiveError(
                        f"{archive}: it would unpack to {len(infos):,} members and {total:,} bytes, more than a "
                        f"{archive.stat().st_size:,}-byte archive may ({max_members:,} members, {max_bytes:,} bytes); "
                        f"this is not the official {dataset.filename}. Refusing to extract; nothing was kept.")
                safe = [(info, _check_zip_member(info, archive)) for info in infos]  # all checked before any write
                for info, rel in safe:
                    if not rel:
                        continue
                    dest = tmp / rel
                    if info.is_dir():
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, dest.open("wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in _LOCAL_WRITE_ERRNOS:
                raise _write_error(exc, root, kept) from exc
            raise _CorruptArchiveError(f"{archive}: corrupt or truncated zip archive ({exc}); delete it and run "
                                       "the command again.") from exc
        first = dataset.expect[0]
        tops = [tmp, *sorted(p for p in tmp.iterdir() if p.is_dir())]
        base = next((t for t in tops if (t / first).exists()), None)
        if base is None:
            raise UnsafeArchiveError(f"{archive}: no {first} inside, at its top or in one folder; this is not the "
                                     f"official {dataset.filename}.")
        lacking = [e for e in dataset.expect if not (base / e).exists()]
        if lacking:
            raise UnsafeArchiveError(f"{archive}: no {', '.join(lacking)} beside {first}; this is not the complete "
                                     f"official {dataset.filename}.")
        entries = sorted(base.iterdir())
        taken = [root / p.name for p in entries if (root / p.name).exists()]
        if taken:
            raise DownloadError(f"{taken[0]}: already exists, so {archive.name} cannot be unpacked into {root}; "
                                "move it away (or choose another --root) and run again.")
        try:
            for p in entries:
                os.replace(p, root / p.name)
        except OSError as exc:
            raise _write_error(exc, root, kept) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
