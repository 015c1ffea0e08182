"""``spips-bench bench``: it runs, writes a well-formed report, and compares like with like.

Nothing here asserts a speed: timings on a shared CPU are not testable. What is asserted is that the
command works end to end, that the reference implementations it compares with agree with independent
sources, and that the measuring helpers measure what they claim (closed-form FLOP counts, memory).
"""

from __future__ import annotations

import csv
import math
import shlex
from pathlib import Path

import pytest
import torch

from spips_bench.cli import build_parser, main
from spips_bench.perf.common import BenchConfig, make_images, peak_memory
from spips_bench.perf.peers import max_abs_diff, naive_ms_ssim, naive_ssim
from spips_bench.perf.report import CSV_COLUMNS
from spips_bench.perf.system import conv_flops


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    # one thread: the test checks that everything works, and idle threads spinning on a shared CPU only
    # slow it down
    rc = main(["bench", "--quick", "--metrics", "ssim,stlpips", "--peers", "piq,pyiqa", "--threads", "1",
               "--run-samples", "1", "--out", str(out)])
    assert rc == 0
    assert torch.get_num_threads() == threads  # the benchmark's thread setting does not leak
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "cpu.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        return list(reader)


def test_quick_bench_writes_csv(quick_report: Path) -> None:
    rows = _rows(quick_report)
    sections = {r["section"] for r in rows}
    assert {"zoo", "peers", "reference", "system", "projection", "target"} <= sections
    zoo = {(r["case"], r["unit"]) for r in rows if r["section"] == "zoo"}
    for name in ("ssim", "stlpips"):
        assert {(name, "pairs/s"), (name, "triplets/s")} <= zoo
    for r in rows:
        if r["section"] in ("zoo", "peers", "reference"):
            assert float(r["ours"]) > 0 and int(r["size"]) == 48 and int(r["batch"]) == 2
        if r["section"] in ("peers", "reference"):
            assert float(r["peer_value"]) > 0 and float(r["ratio"]) > 0
    peers = {r["peer"] for r in rows if r["section"] == "peers"}
    assert {"piq.ssim", "pyiqa ssim", "pyiqa stlpips"} <= peers
    targets = [r for r in rows if r["section"] == "target"]
    assert len(targets) >= 10 and all(r["status"] in ("met", "missed", "n/a") for r in targets)


def test_quick_bench_same_scores_as_peers(quick_report: Path) -> None:
    # identical weights on both sides: the deep metrics must agree with the reference packages
    rows = _rows(quick_report)
    diffs = [float(r["max_abs_diff"]) for r in rows if r["peer"] == "pyiqa stlpips"]
    assert diffs and max(diffs) <= 1e-5
    ref = [float(r["max_abs_diff"]) for r in rows if r["section"] == "reference"]
    assert ref and max(ref) <= 1e-6
    run = next(r for r in rows if r["case"] == "run end to end (stlpips)")
    assert float(run["ours"]) > 0 and float(run["peer_value"]) > 0 and float(run["max_abs_diff"]) <= 1e-5
    mem = next(r for r in rows if r["case"] == "run peak RSS")
    assert float(mem["ours"]) > 50 and float(mem["ratio"]) > 0


def test_quick_bench_markdown(quick_report: Path) -> None:
    text = (quick_report / "cpu.md").read_text(encoding="utf-8")
    for heading in ("## Machine", "## Targets", "## Zoo metrics", "## Against reference packages",
                    "## Backbone efficiency", "## `spips-bench run` end to end",
                    "CPU projection (not a GPU measurement)"):
        assert heading in text
    # the command at the top reproduces the configuration that was run
    line = next(x for x in text.splitlines() if x.startswith("Regenerate with: `"))
    argv = shlex.split(line.split("`")[1])[1:]
    args = build_parser().parse_args(argv)
    assert args.metrics == ["ssim", "stlpips"] and args.sizes == [48] and args.batch_size == 2
    assert args.peers == ["piq", "pyiqa"] and args.run_samples == 1 and args.quick


def test_lpips_peer_has_our_weights_and_scores() -> None:
    from spips_bench.perf.peers import lpips_peer
    from spips_bench.zoo.lpips import LPIPS

    ours = LPIPS(net="alex", pretrained=False, offline=True).eval()
    peer = lpips_peer(ours)
    ref, p0, p1 = make_images(40, 2, seed=3)
    with torch.inference_mode():
        for dist in (p0, p1):
            assert max_abs_diff(ours(dist, ref), peer.fn(dist, ref)) <= 1e-5


def test_naive_reference_matches_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    ref, p0, _ = make_images(40, 2, seed=1)
    ours = naive_ssim(p0, ref)
    for i in range(2):
        expected = structural_similarity(p0[i].double().numpy(), ref[i].double().numpy(), channel_axis=0,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1.0)
        assert abs(float(ours[i]) - expected) < 1e-10
    assert torch.allclose(naive_ssim(ref, ref), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(naive_ms_ssim(ref, ref, 2), torch.ones(2, dtype=torch.float64))


def test_zoo_ssim_matches_naive_reference() -> None:
    from spips_bench.zoo.ssim import MSSSIM, SSIM

    ref, p0, _ = make_images(64, 2, seed=2)
    assert max_abs_diff(SSIM(color="rgb")(p0, ref), naive_ssim(p0, ref)) < 1e-6
    assert max_abs_diff(MSSSIM(color="rgb")(p0, ref), naive_ms_ssim(p0, ref, 3)) < 1e-6


def test_conv_flops_closed_form() -> None:
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
    # one multiply-add per output element and kernel tap: 2 * C_out * H * W * C_in * k * k
    assert conv_flops(conv, torch.rand(2, 3, 16, 16)) == 2 * 2 * 8 * 16 * 16 * 3 * 9


def test_peak_memory_sees_an_allocation() -> None:
    # the block lives until the block of the context manager ends, so its final reading sees it whatever
    # the sampling thread managed to read on a busy machine (freed inside, it could fall between samples)
    with peak_memory("cpu") as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del block
    if math.isnan(peak[0]):
        pytest.skip("no /proc/self/statm on this platform")
    assert peak[0] >= 48


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "4"], "at least 8 px"),
    (["--peers", "skimage"], "unknown package"),
    (["--metrics", "no-such-metric"], "unknown metric"),
])
def test_bad_options_are_refused(argv: list[str], message: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) if argv[0] == "--sizes" else _no_raise():
        rc = main(["bench", *argv, "--out", str(tmp_path), "--no-system"])
        assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cpu.md").exists()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="--repeats"):
        BenchConfig(metrics=["ssim"], repeats=0)
    with pytest.raises(ValueError, match="--device"):
        BenchConfig(metrics=["ssim"], device="tpu")


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_the_plan_names_registered_metrics_and_known_peers() -> None:
    # perf/targets.toml is the benchmark's only source of metric names: each must resolve, and each peer
    # and reference it names must exist, so that a renamed metric or peer fails here, not in a bench run
    from spips_bench.perf import peers
    from spips_bench.perf.common import bench_plan
    from spips_bench.registry import get_spec

    plan = bench_plan()
    named = {*plan.default_metrics, *plan.peers, *plan.references, plan.run_metric,
             *(n for t in plan.targets for n in (t.metric, t.baseline) if n)}
    assert all(get_spec(n).name == n for n in named)
    labels = {label for ls in plan.peers.values() for label in ls}
    assert labels == set(peers.PEERS) and {p.package for p in peers.PEERS.values()} == set(plan.packages)
    assert all(callable(getattr(peers, fn)) for fn, _ in plan.references.values())
    assert {t.peer for t in plan.targets if t.peer} <= labels
    assert plan.run_peer == plan.peers[plan.run_metric][0]


def test_targets_compare_with_their_threshold() -> None:
    from spips_bench.perf.common import Target

    assert Target("peer-ratio", "x", ">= 3x").met(3.0) and not Target("peer-ratio", "x", ">= 3x").met(2.9)
    assert Target("peer-diff", "x", "<= 1e-6").met(1e-7) and not Target("peer-diff", "x", "<= 1e-6").met(2e-6)


def test_evaluate_targets_reads_rows_by_the_plan() -> None:
    from spips_bench.perf.common import BenchResult, Row
    from spips_bench.perf.metrics import evaluate_targets

    config = BenchConfig(metrics=["default"], sizes=[64, 256], system=False)
    result = BenchResult(config)
    result.rows += [Row("peers", "ssim [color=rgb]", 256, 16, "pairs/s", 40.0, "piq.ssim", 10.0, 1e-7),
                    Row("peers", "ssim [color=y]", 256, 16, "pairs/s", 1.0, "pyiqa ssim", 10.0, 1e-7),
                    Row("peers", "lpips", 64, 16, "triplets/s", 12.0, "lpips.LPIPS", 10.0, 2e-5),
                    Row("zoo", "spips-alex-st", 64, 16, "pairs/s", 10.0),
                    Row("zoo", "stlpips", 64, 16, "pairs/s", 12.0)]
    evaluate_targets(config, result)
    status = {t["target"]: t["status"] for t in result.targets}
    assert status["ssim 256px pairs/s vs piq.ssim (RGB)"] == "met"  # 4x; the pyiqa row is not the piq peer
    assert status["lpips 64px 2AFC triplets/s vs lpips.LPIPS"] == "missed"  # 1.2x < 1.3x
    assert status["lpips 64px scores vs lpips.LPIPS"] == "missed"  # 2e-5 > 1e-5
    assert status["spips-alex-st 64px time / stlpips time (pairs)"] == "met"  # 1.2x <= 1.5x
    assert status["ms-ssim 256px pairs/s vs piq.multi_scale_ssim (RGB)"] == "n/a"  # not measured
