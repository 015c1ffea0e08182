"""Scale-out under torchrun: two CPU ranks (gloo) give the same store as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from spips_bench.run.config import RunConfig
from spips_bench.run.runner import run_benchmark


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _store_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.csv"))}


@pytest.mark.slow
def test_two_ranks_match_one_process(demo_cache: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIPS_BENCH_CACHE", str(demo_cache))
    common = ["--metrics", "psnr", "--dataset", "demo", "--categories", "cnn", "--batch-size", "16",
              "--workers", "0", "--bootstrap", "20", "--no-progress", "--device", "cpu"]
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPIPS_BENCH_CACHE": str(demo_cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", "-m", "spips_bench", "run", *common, "--out", str(two)],
        env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((two / "run.json").read_text(encoding="utf-8"))
    assert record["world_size"] == 2 and record["status"] == "complete"
    assert not (two / "parts").exists()  # rank parts are merged and removed by rank 0

    one = tmp_path / "one"
    run_benchmark(RunConfig(metrics=["psnr"], dataset="demo", categories=["cnn"], batch_size=16, workers=0,
                            bootstrap=20, progress=False, device="cpu", out=one))
    files = _store_files(one)
    assert set(files) == {"judgments/2afc/cnn.csv", "judgments/jnd/cnn.csv", "scores/2afc/cnn/psnr.csv",
                          "scores/jnd/cnn/psnr.csv", "summary.csv"}
    assert _store_files(two) == files
    assert (two / "tables.md").read_bytes() == (one / "tables.md").read_bytes()


def test_close_ends_only_the_process_group_it_started() -> None:
    import torch.distributed as dist

    from spips_bench.run.distributed import _Dist

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{_free_port()}")
    try:
        _Dist(0, 1, 0, owns_group=False).close()  # the caller's group: left alone
        assert dist.is_initialized()
        owner = _Dist(0, 1, 0, owns_group=True)
        owner.close()
        assert not dist.is_initialized() and not owner.owns_group
        owner.close()  # a second close is a no-op
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("fails", [False, True])
def test_a_run_closes_its_process_group_also_when_it_fails(demo_cache: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, fails: bool) -> None:
    # A gloo group left alive at interpreter exit can abort a rank after its work is done (SIGABRT in the
    # group's thread teardown): every run ends the group it started, whether it succeeds or fails.
    from spips_bench.run import runner
    from spips_bench.run.distributed import _Dist

    closed: list[bool] = []

    class Recording(_Dist):
        def close(self) -> None:
            closed.append(True)

    monkeypatch.setenv("SPIPS_BENCH_CACHE", str(demo_cache))
    monkeypatch.setattr(runner._Dist, "from_env", classmethod(lambda cls: Recording()))
    config = RunConfig(metrics=["psnr"], dataset="demo", categories=["cnn"], batch_size=16, workers=0,
                       bootstrap=20, progress=False, device="cpu", out=tmp_path / "run",
                       kinds=["no-such-kind"] if fails else None)
    if fails:
        with pytest.raises(ValueError):
            run_benchmark(config)
    else:
        run_benchmark(config)
    assert closed == [True]
