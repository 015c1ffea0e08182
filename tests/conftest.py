"""Shared fixtures. Tests never touch the network: SPIPS_BENCH_OFFLINE is forced on here."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["SPIPS_BENCH_OFFLINE"] = "1"

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture
def server() -> Iterator[Any]:
    """A local HTTP server on 127.0.0.1 for one test (``test_download.Server``: byte ranges, faults)."""
    from test_download import Server

    s = Server()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    # Two cores on the build machines; more threads only add contention.
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the demo set, generated once per test run and shared by every test file."""
    from spips_bench.data.demo import DEMO_VERSION, ensure_demo

    cache = tmp_path_factory.getbasetemp() / "spips-bench-cache"
    ensure_demo(cache / f"demo-v{DEMO_VERSION}")
    return cache


@pytest.fixture
def demo(demo_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo set's root, with the environment pointing at the shared cache and at no BAPPS tree."""
    from spips_bench.data.demo import default_demo_root

    monkeypatch.setenv("SPIPS_BENCH_CACHE", str(demo_cache))
    monkeypatch.delenv("SPIPS_BENCH_BAPPS", raising=False)
    monkeypatch.delenv("SPIPS_BENCH_DATA", raising=False)
    return default_demo_root()


@pytest.fixture
def demo_cnn_copy(demo: Path) -> Callable[[Path, int], Path]:
    """Build a BAPPS root from the first ``n`` samples of the demo's 2AFC val cnn and JND val cnn.

    Every 2AFC val category folder is created (empty but cnn) so that the root counts as BAPPS val.
    """
    import shutil

    from spips_bench.data.bapps import TWO_AFC_CATEGORIES

    def build(root: Path, n: int) -> Path:
        for c in TWO_AFC_CATEGORIES["val"]:
            (root / "2afc" / "val" / c).mkdir(parents=True, exist_ok=True)
        for kind, parts in (("2afc", ("ref", "p0", "p1", "judge")), ("jnd", ("p0", "p1", "same"))):
            for part in parts:
                src, dst = demo / kind / "val" / "cnn" / part, root / kind / "val" / "cnn" / part
                dst.mkdir(parents=True, exist_ok=True)
                for f in sorted(src.iterdir())[:n]:
                    shutil.copy(f, dst / f.name)
        return root

    return build
