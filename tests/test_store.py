"""The score store: file format, atomic writes, resume bookkeeping, rank merging, lock, run records."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from spips_bench.errors import DatasetError, RunConfigError
from spips_bench.runinfo import check_fingerprint
from spips_bench.store import ScoreStore, ShardWriter, format_value, read_table, write_table


def test_values_round_trip_exactly_and_rows_are_sorted(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = {"000002": (0.1 + 0.2, 1e-300), "000000": (math.inf, -0.0), "000001": (math.nan, 3.0)}
    write_table(path, ("d0", "d1"), rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ["sample,d0,d1", "000000,nan,-0.0", "000001,nan,3.0", "000002,0.30000000000000004,1e-300"]
    back = read_table(path, ("d0", "d1"))
    assert back["000002"] == (0.1 + 0.2, 1e-300)  # repr round-trips every float64 bit
    assert math.isnan(back["000000"][0]) and math.isnan(back["000001"][0])


def test_format_value_is_shortest_repr() -> None:
    assert format_value(0.5) == "0.5"
    assert float(format_value(1 / 3)) == 1 / 3
    assert format_value(float("-inf")) == "nan"


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_table(tmp_path / "a" / "x.csv", ("d",), {"s": (1.0,)})
    write_table(tmp_path / "a" / "x.csv", ("d",), {"s": (1.0,), "t": (2.0,)})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.csv"]
    mask = os.umask(0o022)
    try:
        write_table(tmp_path / "a" / "y.csv", ("d",), {"s": (1.0,)})
    finally:
        os.umask(mask)
    assert (tmp_path / "a" / "y.csv").stat().st_mode & 0o777 == 0o644  # readable by others, like open()


def test_foreign_header_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("name,value\nfoo,1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"x\.csv.*expected the header 'sample,d'"):
        read_table(path, ("d",))
    path.write_text("sample,d\nfoo,abc\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"x\.csv:2: not a number"):
        read_table(path, ("d",))


def test_shard_writer_keeps_stored_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    write_table(path, ("d",), {"a": (1.0,)})
    w = ShardWriter(path, ("d",))
    w.add("a", (99.0,))  # already stored: a resumed run never replaces a stored value
    w.add("b", (2.0,))
    w.flush()
    assert read_table(path, ("d",)) == {"a": (1.0,), "b": (2.0,)}


def test_unsafe_names_are_refused(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path)
    with pytest.raises(ValueError, match=r"metric '\.\./x' cannot name a store file"):
        store.score_path("2afc", "cnn", "../x")


def test_rank_parts_are_read_together_and_merged(tmp_path: Path) -> None:
    ranks = [ScoreStore(tmp_path, rank=r, world_size=2) for r in range(2)]
    for r, store in enumerate(ranks):
        w = store.score_writer("jnd", "cnn", "psnr")
        j = store.judgment_writer("jnd", "cnn")
        for i in range(r, 6, 2):
            w.add(f"{i:06d}", (float(i),))
            j.add(f"{i:06d}", (i / 10,))
        w.flush()
        j.flush()
    assert (tmp_path / "parts" / "rank1" / "scores" / "jnd" / "cnn" / "psnr.csv").is_file()
    main = ScoreStore(tmp_path)
    assert sorted(main.read_scores("jnd", "cnn", "psnr")) == [f"{i:06d}" for i in range(6)]
    assert main.entries() == [("jnd", "cnn", "psnr")]
    main.merge_parts()
    assert not (tmp_path / "parts").exists()
    text = (tmp_path / "scores" / "jnd" / "cnn" / "psnr.csv").read_text(encoding="utf-8")
    assert text == "sample,d\n" + "".join(f"{i:06d},{float(i)!r}\n" for i in range(6))
    assert main.read_judgments("jnd", "cnn")["000005"] == 0.5


def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    first, second = ScoreStore(tmp_path), ScoreStore(tmp_path)
    refused = pytest.raises(RunConfigError, match="in use by another spips-bench run")
    with first.lock(), refused, second.lock():
        pass
    with ScoreStore(tmp_path).lock():  # released on exit
        pass


def test_broken_run_record_is_reported(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RunConfigError, match=r"run\.json: not valid JSON"):
        ScoreStore(tmp_path).read_run()


def test_clear_removes_only_what_a_run_writes(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path)
    write_table(store.score_path("2afc", "cnn", "psnr"), ("d0", "d1"), {"a": (1.0, 2.0)})
    store.write_run({"status": "complete"})
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    store.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _fp(**changes: object) -> dict[str, dict[str, object]]:
    fp: dict[str, dict[str, object]] = {
        "global": {"dataset": "demo", "split": "val", "load_size": 64, "amp": False},
        "metrics": {"psnr": {"target": "m:Psnr", "options": {}}},
    }
    fp["global"].update(changes)
    return fp


def test_fingerprint_accepts_same_and_added_metrics_refuses_changes(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path)
    previous = {"fingerprint": json.loads(json.dumps(_fp()))}
    check_fingerprint(store, None, _fp())
    check_fingerprint(store, previous, _fp())
    more = _fp()
    more["metrics"]["ssim"] = {"target": "m:Ssim", "options": {}}
    check_fingerprint(store, previous, more)
    with pytest.raises(RunConfigError, match=r"load_size = 64, this run has load_size = None.*another --out"):
        check_fingerprint(store, previous, _fp(load_size=None))
    changed = _fp()
    changed["metrics"]["psnr"] = {"target": "m:Psnr", "options": {"data_range": 2}}
    with pytest.raises(RunConfigError, match=r"metric 'psnr' was scored with other settings.*options"):
        check_fingerprint(store, previous, changed)
