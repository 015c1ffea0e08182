"""Every environment variable spips-bench reads, in one place.

=========================  ======================================================================
``SPIPS_BENCH_BAPPS``      BAPPS root (the folder holding ``2afc/`` and ``jnd/``) for ``run``,
                           ``train`` and ``download``; default ``./datasets/bapps``.
``SPIPS_BENCH_OFFLINE``    ``1``/``true``/``yes``/``on``: never download (weights or BAPPS).
``SPIPS_BENCH_WEIGHTS``    a folder of weight files, searched before the torch hub cache.
``SPIPS_BENCH_CACHE``      the spips-bench cache (the demo set lives in ``demo-v<N>/`` under it, the
                           decoded patches of ``run``/``train`` in ``patches/``); default
                           ``$XDG_CACHE_HOME/spips-bench``, else ``~/.cache/spips-bench``.
``TORCH_HOME``             the torch hub cache (weights in ``hub/checkpoints``); default
                           ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (torch's own rule).
``XDG_CACHE_HOME``         the base of both caches when they are not set.
``WORLD_SIZE``,            set by ``torchrun``: the number of processes and this process's GPU.
``LOCAL_RANK``
``SPIPS_BENCH_DATA``       deprecated spelling of ``SPIPS_BENCH_BAPPS``: still read when that is unset,
                           with a warning on stderr.
=========================  ======================================================================

The values are read at each call, so a change of the environment (a test's ``monkeypatch``) is seen.
Offline mode can also be switched on for a block of code with :func:`offline_mode` (what ``--offline``
does) without writing to ``os.environ``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

BAPPS = "SPIPS_BENCH_BAPPS"
OFFLINE = "SPIPS_BENCH_OFFLINE"
WEIGHTS = "SPIPS_BENCH_WEIGHTS"
CACHE = "SPIPS_BENCH_CACHE"
TORCH_HOME = "TORCH_HOME"
XDG_CACHE_HOME = "XDG_CACHE_HOME"
WORLD_SIZE = "WORLD_SIZE"
LOCAL_RANK = "LOCAL_RANK"
#: The old name of :data:`BAPPS` (read by ``run`` only, before the one name was introduced).
DEPRECATED_BAPPS = "SPIPS_BENCH_DATA"

#: Every variable of the project, for the documentation and its test.
ALL = (BAPPS, OFFLINE, WEIGHTS, CACHE, TORCH_HOME, XDG_CACHE_HOME, WORLD_SIZE, LOCAL_RANK, DEPRECATED_BAPPS)

_TRUE = ("1", "true", "yes", "on")
_forced_offline = 0  # depth of nested offline_mode(True) blocks


def _get(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def bapps_root() -> tuple[Path, str | None]:
    """``(root, source)``: where BAPPS is looked for, and which variable named it (None: the default).

    ``$SPIPS_BENCH_BAPPS``; else the deprecated ``$SPIPS_BENCH_DATA`` (with a one-line warning on
    stderr); else ``./datasets/bapps``.
    """
    value = _get(BAPPS)
    old = _get(DEPRECATED_BAPPS)
    if old is not None:
        if value is None:
            print(f"warning: ${DEPRECATED_BAPPS} is deprecated; rename it to ${BAPPS} (read by run, train and "
                  "download alike).", file=sys.stderr)
            return Path(old).expanduser(), DEPRECATED_BAPPS
        if Path(old).expanduser() != Path(value).expanduser():
            print(f"warning: ${DEPRECATED_BAPPS}={old} is ignored: ${BAPPS}={value} is set and wins; unset the "
                  f"deprecated ${DEPRECATED_BAPPS}.", file=sys.stderr)
    if value is not None:
        return Path(value).expanduser(), BAPPS
    return Path.cwd() / "datasets" / "bapps", None


def offline() -> bool:
    """Whether downloads are forbidden: inside :func:`offline_mode`, or ``$SPIPS_BENCH_OFFLINE`` is true."""
    if _forced_offline:
        return True
    return (os.environ.get(OFFLINE) or "").strip().lower() in _TRUE


@contextlib.contextmanager
def offline_mode(on: bool = True) -> Iterator[None]:
    """Forbid downloads inside the block when ``on`` (the ``--offline`` flag); the environment is untouched."""
    global _forced_offline
    if not on:
        yield
        return
    _forced_offline += 1
    try:
        yield
    finally:
        _forced_offline -= 1


def weights_dir() -> Path | None:
    """``$SPIPS_BENCH_WEIGHTS``, the folder of weight files filled by hand; None when unset."""
    value = _get(WEIGHTS)
    return Path(value).expanduser() if value else None


def _xdg_cache() -> Path:
    value = _get(XDG_CACHE_HOME)
    return Path(value).expanduser() if value else Path.home() / ".cache"


def cache_dir() -> Path:
    """``$SPIPS_BENCH_CACHE``, else ``$XDG_CACHE_HOME/spips-bench``, else ``~/.cache/spips-bench``."""
    value = _get(CACHE)
    return Path(value).expanduser() if value else _xdg_cache() / "spips-bench"


def torch_home() -> Path:
    """``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (torch.hub's rule)."""
    value = _get(TORCH_HOME)
    return Path(value).expanduser() if value else _xdg_cache() / "torch"


def distributed() -> tuple[int, int]:
    """``(WORLD_SIZE, LOCAL_RANK)`` as torchrun sets them; ``(1, 0)`` outside torchrun.

    Raises:
        ValueError: a value that is not a whole number.
    """
    out = []
    for name, default in ((WORLD_SIZE, "1"), (LOCAL_RANK, "0")):
        text = _get(name) or default
        try:
            out.append(int(text))
        except ValueError:
            raise ValueError(f"${name}={text!r} is not a whole number; torchrun sets it, unset it otherwise."
                             ) from None
    return out[0], out[1]
