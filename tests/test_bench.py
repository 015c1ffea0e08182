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
from spips_bench.perf.common import BenchConfig, BenchResult, make_images, peak_memory
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
    assert {"zoo", "peers", "reference", "system", "projection", "target", "bandwidth", "run-case"} <= sections
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
                    "## Backbone efficiency", "## `spips-bench run` end to end", "## Memory bandwidth and SSIM",
                    "## `spips-bench run` cases: shared trunk and decoded-patch cache",
                    "## Full BAPPS val: projection on this machine (cpu)"):
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
    # the sampling thread managed to read on a busy machine (freed inside, it could fall between samples).
    # A fresh anonymous mapping, every page written: new resident memory whatever the allocator kept from
    # earlier tests (a tensor could reuse freed pages that are still resident, and show no growth).
    import mmap

    size = 64 * 2**20
    with peak_memory("cpu") as peak:
        block = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
    block.close()
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
    named = {*plan.default_metrics, *plan.peers, *plan.references, plan.run_metric, *plan.bandwidth_metrics,
             *plan.shared_trunk, plan.cache_metric, *(n for t in plan.targets for n in (t.metric, t.baseline) if n)}
    assert all(get_spec(n).name == n for n in named)
    labels = {label for ls in plan.peers.values() for label in ls}
    assert labels == set(peers.PEERS) and {p.package for p in peers.PEERS.values()} == set(plan.packages)
    assert all(callable(getattr(peers, fn)) for fn, _ in plan.references.values())
    assert {t.peer for t in plan.targets if t.peer} <= labels
    assert plan.run_peer == plan.peers[plan.run_metric][0]
    assert set(plan.bandwidth_metrics) <= set(plan.references)  # their fraction is read from those rows
    assert {t.key for t in plan.targets if t.check == "run-case"} == {"shared-trunk", "cache-decode",
                                                                       "cache-end-to-end"}


@pytest.mark.filterwarnings("ignore::spips_bench.errors.UntrainedHeadsWarning")  # heads do not matter here
def test_the_plans_shared_trunk_metrics_share_one_trunk() -> None:
    # the shared-trunk case compares one trunk pass with several: the runner must group all of them
    from spips_bench.perf.common import bench_plan, create_for_bench
    from spips_bench.run.runner import trunk_groups

    metrics = [create_for_bench(name)[0] for name in bench_plan().shared_trunk]
    assert trunk_groups(metrics) == [list(range(len(metrics)))]


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


# -- the arithmetic of the derived figures (spips_bench/perf/model.py) --------------------------------


def _filter_chain_bytes(side: int, channels: int, scales: int) -> int:
    """Bytes of the streaming model counted from real tensors: the inputs and outputs of each separable
    pass of the five moments, and of the 2x2 average between scales (sides from the zoo's MS-SSIM)."""
    import torch.nn.functional as F

    from spips_bench.zoo.ssim import matlab_box_downsample, ms_ssim_maps

    x = torch.rand(1, channels, side, side)
    maps = ms_ssim_maps(x, x, scales=scales) if scales > 1 else None
    total = 0
    planes = x
    for j in range(scales):
        moments = planes.expand(5, -1, -1, -1)  # five maps of the plane's size
        horizontal = F.avg_pool2d(moments, (1, 11), stride=1)  # valid 1 x 11 pass
        vertical = F.avg_pool2d(horizontal, (11, 1), stride=1)  # valid 11 x 1 pass
        if maps is not None:
            assert tuple(vertical.shape[-2:]) == tuple(maps[j].shape[-2:])
        total += moments.numel() + 2 * horizontal.numel() + 2 * vertical.numel()
        if j < scales - 1:
            smaller = matlab_box_downsample(planes, 2)
            total += 2 * (planes.numel() + smaller.numel())
            planes = smaller
    return 4 * total


@pytest.mark.parametrize("side, scales", [(256, 1), (256, 5), (161, 5), (64, 3)])
def test_ssim_bytes_count_every_pass(side: int, scales: int) -> None:
    from spips_bench.perf.model import ssim_bytes_per_pair

    assert ssim_bytes_per_pair(side, scales=scales, model="compulsory") == 2 * 3 * side * side * 4
    assert ssim_bytes_per_pair(side, scales=scales, model="streaming") == _filter_chain_bytes(side, 3, scales)


def test_ssim_bytes_refuse_bad_input() -> None:
    from spips_bench.perf.model import ssim_bytes_per_pair

    with pytest.raises(ValueError, match="model must be one of"):
        ssim_bytes_per_pair(64, model="fused")
    with pytest.raises(ValueError, match="fewer scales"):
        ssim_bytes_per_pair(64, scales=5, model="streaming")  # 64 -> 32 -> 16 -> 8: below the window


def test_bandwidth_arithmetic() -> None:
    from spips_bench.perf.model import bandwidth_fraction, copy_bandwidth

    assert copy_bandwidth(2**30, 0.5) == pytest.approx(2 * 2**30 / 0.5 / 1e9)  # read + write
    # 1.5 MB per pair at 1000 pairs/s is 1.5 GB/s: 0.15 of 10 GB/s
    assert bandwidth_fraction(1_500_000, 1000.0, 10.0) == pytest.approx(0.15)
    assert math.isnan(bandwidth_fraction(1, 1.0, 0.0))


def _run(seconds: float, wall: float, metric_s: float, cache_s: float = 0.0) -> dict[str, object]:
    return {"seconds": seconds, "wall_s": wall, "metric_seconds": {"m": metric_s}, "patch_cache_seconds": cache_s,
            "patch_cache": {}, "triplets": 100, "command": "run --metrics m"}


def test_run_case_ratios() -> None:
    from spips_bench.perf.model import data_seconds, run_case_ratios

    cold, warm = _run(5.0, 8.0, 1.0, cache_s=3.0), _run(1.5, 4.0, 1.0, cache_s=0.1)
    alone = [_run(2.0, 4.0, 1.5), _run(3.0, 5.0, 2.5)]
    together = _run(2.5, 4.5, 2.0)
    assert data_seconds(cold) == 4.0 and data_seconds(warm) == 0.5
    r = run_case_ratios(cold, warm, alone, together)
    assert r["shared-trunk"] == {"ratio": pytest.approx(2.5 / 5.0), "wall_ratio": pytest.approx(4.5 / 9.0)}
    assert r["cache-decode"] == {"ratio": pytest.approx(0.5 / 4.0), "patch_cache_ratio": pytest.approx(0.1 / 3.0)}
    assert r["cache-end-to-end"] == {"ratio": pytest.approx(8.0 / 4.0), "inside_ratio": pytest.approx(5.0 / 1.5)}


def test_mean_run_averages_the_timings() -> None:
    from spips_bench.perf.model import mean_run

    a, b = _run(2.0, 4.0, 1.0, 0.5), _run(4.0, 6.0, 3.0, 1.5)
    m = mean_run([a, b])
    assert (m["seconds"], m["wall_s"], m["patch_cache_seconds"], m["metric_seconds"]) == (3.0, 5.0, 1.0, {"m": 2.0})
    assert m["triplets"] == 100 and a["seconds"] == 2.0  # the inputs are left as they were
    with pytest.raises(ValueError, match="at least one run"):
        mean_run([])


def test_full_val_projection_closed_form() -> None:
    from spips_bench.perf.model import BAPPS_VAL_IMAGES, full_val_projection

    # 100 triplets and 50 JND pairs: 400 images. Metric a: 10 triplets/s, 5 pairs/s -> 20 s; b: 20 and 10
    # -> 10 s; c: 50 and 25 -> 4 s. a and b together: 8 and 4 -> 25 s.
    proj = full_val_projection({"a": (10.0, 5.0), "b": (20.0, 10.0), "c": (50.0, 25.0)},
                               {("a", "b"): (8.0, 4.0)}, decode_s_per_image=0.01, warm_s_per_image=0.001,
                               cold_s_per_image=0.02, process_s=2.0, triplets=100, jnd_pairs=50)
    assert proj["images"] == 400 and BAPPS_VAL_IMAGES == 3 * 35_844 + 2 * 9_600
    assert proj["per_metric"] == {"a": 20.0, "b": 10.0, "c": 4.0} and proj["per_group"] == {("a", "b"): 25.0}
    assert proj["before_s"] == pytest.approx(34.0 + 3 * (400 * 0.01 + 2.0))  # 52 s
    assert proj["after_s"] == pytest.approx(25.0 + 4.0 + 400 * 0.001 + 2.0)  # 31.4 s
    assert proj["after_cold_s"] == pytest.approx(25.0 + 4.0 + 400 * 0.02 + 2.0)
    assert proj["ratio"] == pytest.approx(31.4 / 52.0)
    # one run of a, b and c without sharing or cache: 34 s compute, 400 images decoded once, one process
    assert proj["one_run_s"] == pytest.approx(34.0 + 400 * 0.01 + 2.0)  # 40 s
    assert proj["one_run_ratio"] == pytest.approx(31.4 / 40.0)
    with pytest.raises(ValueError, match=r"group a\+z"):
        full_val_projection({"a": (1.0, 1.0)}, {("a", "z"): (1.0, 1.0)}, decode_s_per_image=0.0,
                            warm_s_per_image=0.0, cold_s_per_image=0.0, process_s=0.0)


def _synthetic_result(out: Path) -> BenchResult:
    """A result as the benchmark leaves it, with made-up numbers and no measuring."""
    from spips_bench.perf.common import Row, bench_plan
    from spips_bench.perf.model import run_case_ratios

    plan = bench_plan()
    config = BenchConfig(metrics=["default"], sizes=[64], deep_sizes=[64], out=out, command="spips-bench bench X")
    result = BenchResult(config)
    for name in (*plan.shared_trunk, plan.cache_metric):
        result.rows += [Row("zoo", name, 64, 16, "triplets/s", 100.0), Row("zoo", name, 64, 16, "pairs/s", 200.0)]
    group = "+".join(plan.shared_trunk)
    result.rows += [Row("shared", group, 64, 16, "triplets/s", 50.0), Row("shared", group, 64, 16, "pairs/s", 100.0)]
    cold, warm, nocache = _run(5.0, 8.0, 1.0, 3.0), _run(1.5, 2.0, 1.0, 0.1), _run(4.0, 7.0, 1.0)
    alone = {m: _run(2.0, 4.0, 1.5) for m in plan.shared_trunk}
    together = _run(3.0, 5.0, 2.5)
    result.system["run_cases"] = {
        "cache": {"cold": cold, "warm": warm, "no-cache": nocache}, "alone": alone, "together": together,
        "order": [("cold", cold), ("warm", warm), ("no-cache", nocache), *alone.items(), ("together", together)],
        "ratios": run_case_ratios(cold, warm, list(alone.values()), together),
        "data_s_per_image": {"cold": 4.0 / 300, "warm": 0.5 / 300, "decode": 3.0 / 300}, "process_s": 3.0,
        "metrics": list(plan.shared_trunk), "cache_metric": plan.cache_metric, "stored_side": 256}
    result.system["bandwidth"] = {"bytes": 2**28, "seconds": 0.05, "runs_s": [0.05] * 5, "gb_s": 10.7,
                                  "metrics": {}}
    return result


def test_new_targets_and_report_sections(tmp_path: Path) -> None:
    from spips_bench.perf.common import bench_plan
    from spips_bench.perf.metrics import evaluate_targets, full_val
    from spips_bench.perf.report import write_report

    result = _synthetic_result(tmp_path)
    evaluate_targets(result.config, result)
    by_check = {t.check + ":" + t.key: t.label for t in bench_plan().targets}
    found = {t["target"]: t for t in result.targets}
    # 3.0 s together vs 4 x 2.0 s alone: 0.375 <= 0.4
    assert found[by_check["run-case:shared-trunk"]]["status"] == "met"
    assert found[by_check["run-case:shared-trunk"]]["measured"] == pytest.approx(3.0 / 8.0)
    # data 0.5 s vs 4.0 s: 0.125 <= 0.2; process wall 8.0 / 2.0 = 4x >= 3x
    assert found[by_check["run-case:cache-decode"]]["measured"] == pytest.approx(0.125)
    assert found[by_check["run-case:cache-end-to-end"]]["measured"] == pytest.approx(4.0)
    assert {found[by_check[k]]["status"] for k in ("run-case:cache-decode", "run-case:cache-end-to-end")} == {"met"}
    proj = full_val(result)
    assert proj is not None and not proj["compute_only"]
    assert found[by_check["projection:"]]["measured"] == pytest.approx(proj["ratio"])
    # the shared group at 50 triplets/s and 100 pairs/s replaces the four metrics at 100 and 200 each
    assert proj["per_group"] == {tuple(bench_plan().shared_trunk): pytest.approx(35_844 / 50 + 9_600 / 100)}
    md, _ = write_report(result)
    text = md.read_text(encoding="utf-8")
    assert text.splitlines()[2] == "Regenerate with: `spips-bench bench X`"
    for heading in ("## Memory bandwidth and SSIM", "## `spips-bench run` cases", "### Metrics on one trunk",
                    "## Full BAPPS val: projection on this machine (cpu)", "**after / before**"):
        assert heading in text
    assert "**0.375x** inside the run" in text
    assert (f"stored as 256-px PNG files as BAPPS stores its patches; every run resizes them to 64 px), same "
            f"options, `OMP_NUM_THREADS={result.config.threads}`") in text
    assert "| after / one run, no sharing | " in text
    rows = _rows(tmp_path)
    total = next(r for r in rows if r["section"] == "projection" and r["case"].startswith("run --metrics all"))
    assert float(total["ratio"]) == pytest.approx(proj["ratio"])


def test_write_run_set_stores_patches_at_the_bapps_side(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from spips_bench.perf import runs

    root = runs.write_run_set(tmp_path / "set", runs._DISTINCT + 3, seed=1, stored=runs.BAPPS_STORED_SIDE)
    folder = root / "2afc" / "val" / "traditional"
    for part in ("ref", "p0", "p1"):
        files = sorted((folder / part).glob("*.png"))
        assert [f.name for f in files] == [f"{i:06d}.png" for i in range(runs._DISTINCT + 3)]
        with Image.open(files[-1]) as im:
            assert im.size == (256, 256) and im.mode == "RGB"
        # beyond the encoded triplets, each file is a byte copy of one of them
        assert files[runs._DISTINCT + 1].read_bytes() == files[1].read_bytes()
    assert len(list((folder / "judge").glob("*.npy"))) == runs._DISTINCT + 3
    assert all((root / "2afc" / "val" / c).is_dir() for c in ("cnn", "superres", "deblur", "color", "frameinterp"))
    # a 256-px file resized as a run loads it is the 64-px patch it was made from, near enough
    small = runs.write_run_set(tmp_path / "small", 2, seed=1)
    with Image.open(small / "2afc/val/traditional/ref/000001.png") as a, \
            Image.open(folder / "ref" / "000001.png") as b:
        ref = np.asarray(a, dtype=np.float32)
        got = np.asarray(b.resize((64, 64), Image.BILINEAR), dtype=np.float32)
    assert np.abs(ref - got).mean() < 3.0


def test_projection_without_run_cases_is_compute_only(tmp_path: Path) -> None:
    from spips_bench.perf.metrics import full_val

    result = _synthetic_result(tmp_path)
    del result.system["run_cases"]
    proj = full_val(result)
    assert proj is not None and proj["compute_only"]
    assert proj["after_s"] == pytest.approx(proj["compute_after_s"])


def test_cuda_is_an_accepted_bench_device() -> None:
    # this machine has no GPU: what can be checked is that the configuration and its command carry it
    from spips_bench.cli.bench import canonical_command

    config = BenchConfig(metrics=["default"], device="cuda")
    assert "--device cuda" in canonical_command(config)
