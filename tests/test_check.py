"""`spips-bench tables --check`: what must agree with committed results, at which tolerance, and what it says.

A small run (psnr and ssim on the demo set's cnn category) is scored once; each test compares a doctored
copy of its reports with it (`--check COPY --from RUN`, nothing recomputed), and one test replays it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from spips_bench.cli import main
from spips_bench.report.check import SUMMARY_TOLERANCE, compare_summary, compare_text, numbers_agree

REPORTS = ("run.json", "summary.csv", "tables.md", "tables.tex")


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A complete run folder, with its store (module scope: scored once)."""
    base = tmp_path_factory.mktemp("check")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIPS_BENCH_CACHE", str(base / "cache"))
        out = base / "run"
        assert main(["run", "--metrics", "psnr,ssim", "--dataset", "demo", "--categories", "cnn", "--out",
                     str(out), "--workers", "0", "--no-progress", "--bootstrap", "50"]) == 0
        yield out


@pytest.fixture
def committed(scored: Path, tmp_path: Path) -> Path:
    """A fresh copy of the run's reports, as they would be committed (no store)."""
    folder = tmp_path / "committed"
    folder.mkdir()
    for name in REPORTS:
        shutil.copy(scored / name, folder / name)
    return folder


def _check(committed: Path, scored: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["tables", "--check", str(committed), "--from", str(scored)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _edit_summary(folder: Path, statistic: str, change: float) -> tuple[str, str]:
    """Add ``change`` to the value of psnr's ``statistic`` on 2afc/cnn; returns (old, new) as written."""
    path = folder / "summary.csv"
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    for row in rows:
        if row[:4] == ["2afc", "cnn", "psnr", statistic]:
            old = row[4]
            row[4] = repr(float(old) + change)
            new = row[4]
            break
    else:
        raise AssertionError(f"no psnr {statistic} row in {path}")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return old, new


def _edit_run(folder: Path, path: tuple[str, ...], value: object) -> None:
    record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    node = record
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (folder / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")


def test_an_unchanged_copy_passes_and_states_the_tolerance(scored: Path, committed: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _check(committed, scored, capsys)
    assert code == 0, err
    assert "tables.md, tables.tex identical; summary.csv within 0.0001" in out
    assert "check: comparing with" in err


def test_a_difference_in_the_ninth_digit_of_summary_passes(scored: Path, committed: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # The reported case: plcc_continuous differing in its 9th significant digit on another CPU.
    old, new = _edit_summary(committed, "plcc_continuous", 3e-9)
    assert old != new
    code, out, err = _check(committed, scored, capsys)
    assert code == 0, err
    assert "largest difference 3e-09 at 2afc,cnn,psnr,plcc_continuous value" in out


def test_a_difference_beyond_the_tolerance_names_the_row_and_both_values(
        scored: Path, committed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = _edit_summary(committed, "srcc", 20 * SUMMARY_TOLERANCE)
    code, _, err = _check(committed, scored, capsys)
    assert code == 1
    assert f"summary.csv: 2afc,cnn,psnr,srcc value: committed {new}, regenerated {old}" in err
    assert "within 0.0001" in err and "differ from the committed ones" in err


def test_a_missing_summary_row_is_a_difference(scored: Path, committed: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = committed / "summary.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    dropped = next(line for line in lines if line.startswith("jnd,cnn,ssim,jnd_map,"))
    path.write_text("".join(line for line in lines if line != dropped), encoding="utf-8")
    code, _, err = _check(committed, scored, capsys)
    assert code == 1
    assert "summary.csv: jnd,cnn,ssim,jnd_map: committed (no row), regenerated a row" in err


@pytest.mark.parametrize("name", ["tables.md", "tables.tex"])
def test_tables_are_compared_exactly_line_by_line(scored: Path, committed: Path, name: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = committed / name
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if "psnr" in line and "0." in line)
    original = lines[number]
    lines[number] = original.replace("0.", "9.", 1)  # one printed digit
    path.write_text("".join(lines), encoding="utf-8")
    code, _, err = _check(committed, scored, capsys)
    assert code == 1
    assert f"{name}: line {number + 1}: committed {lines[number].rstrip(chr(10))!r}, regenerated " \
           f"{original.rstrip(chr(10))!r}" in err


@pytest.mark.parametrize("field", [("duration_s",), ("started",), ("dataset", "root"), ("arguments", "workers"),
                                   ("throughput", "pairs_per_second"),
                                   ("metrics", "psnr", "checkpoint")])
def test_times_paths_and_invocation_in_run_json_are_not_compared(
        scored: Path, committed: Path, field: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    _edit_run(committed, field, "elsewhere")
    code, _, err = _check(committed, scored, capsys)
    assert code == 0, err


def test_versions_in_run_json_are_a_note(scored: Path, committed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_run(committed, ("versions", "numpy"), "0.0-other")
    code, _, err = _check(committed, scored, capsys)
    assert code == 0, err
    assert 'note: run.json: versions.numpy: committed "0.0-other"' in err


@pytest.mark.parametrize(("field", "value"), [(("metrics", "psnr", "status"), "skipped"),
                                              (("statistics", "seed"), 7),
                                              (("categories", "2afc/cnn"), 59)])
def test_result_fields_of_run_json_are_compared(scored: Path, committed: Path, field: tuple[str, ...],
                                                value: object, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_run(committed, field, value)
    code, _, err = _check(committed, scored, capsys)
    assert code == 1
    assert f"run.json: {'.'.join(field)}: committed {json.dumps(value)}, regenerated " in err


def test_a_replay_reports_its_progress(scored: Path, committed: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIPS_BENCH_CACHE", str(scored.parent / "cache"))
    code = main(["tables", "--check", str(committed)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    err = captured.err.splitlines()
    assert "check: regenerating part 1 of 1: 2 metric(s) (psnr, ssim) on 2 categories, 120 samples" in err
    for kind in ("2afc", "jnd"):
        assert f"check:   {kind}/cnn: 50 of 60 samples scored" in err
        assert f"check:   {kind}/cnn: 60 of 60 samples scored" in err
    assert "check:   computing the statistics (50 bootstrap resamples each) and the tables" in err
    assert err.index("check:   jnd/cnn: 60 of 60 samples scored") < err.index(
        "check:   computing the statistics (50 bootstrap resamples each) and the tables")
    assert err[-1] == f"check: comparing with {committed}"


def test_numbers_agree_at_the_stated_tolerance() -> None:
    assert numbers_agree(0.608054664865, 0.608054664865 + 0.9e-4)
    assert not numbers_agree(0.608054664865, 0.608054664865 + 1.1e-4)
    assert numbers_agree(float("nan"), float("nan")) and not numbers_agree(float("nan"), 0.5)
    assert numbers_agree(float("inf"), float("inf")) and not numbers_agree(float("inf"), 1e300)
    assert numbers_agree(250.0, 250.0 + 2e-2)  # relative beyond 1
    assert not numbers_agree(250.0, 250.0 + 3e-2)


def test_text_and_summary_comparisons_name_each_difference() -> None:
    diffs = compare_text("t.md", "a\nb\nc\n", "a\nB\nc\nd\n")
    assert [str(d) for d in diffs] == ["t.md: line 2: committed 'b', regenerated 'B'",
                                       "t.md: line 4: committed (no line), regenerated 'd'"]
    head = "kind,category,metric,statistic,value,ci_low,ci_high,n\n"
    old = head + "2afc,cnn,m,plcc,0.5,0.4,0.6,60\n"
    new = head + "2afc,cnn,m,plcc,0.5,0.4,oops,59\n"
    diffs, _ = compare_summary("s.csv", old, new)
    assert [str(d) for d in diffs] == ["s.csv: 2afc,cnn,m,plcc ci_high: committed 0.6, regenerated oops",
                                       "s.csv: 2afc,cnn,m,plcc n: committed 60, regenerated 59"]
