"""The score store: file format, atomic writes, resume bookkeeping, rank merging, lock, run records."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from spips_bench.errors import DatasetError, RunConfigError
from spips_bench.run.record import RUN_FORMAT, check_fingerprint
from spips_bench.run.store import ScoreStore, ShardWriter, format_value, read_table, write_table


def test_values_round_trip_exactly_and_rows_are_sorted(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = {"000002": (0.1 + 0.2, 1e-300), "000000": (math.inf, -0.0), "000001": (math.nan, 3.0)}
    write_table(path, ("d0", "d1"), rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ["sample,d0,d1", "000000,inf,-0.0", "000001,nan,3.0", "000002,0.30000000000000004,1e-300"]
    back = read_table(path, ("d0", "d1"))
    assert back["000002"] == (0.1 + 0.2, 1e-300)  # repr round-trips every float64 bit
    assert back["000000"][0] == math.inf and math.isnan(back["000001"][0])


def test_format_value_is_shortest_repr() -> None:
    assert format_value(0.5) == "0.5"
    assert float(format_value(1 / 3)) == 1 / 3
    assert format_value(float("-inf")) == "-inf" and format_value(float("inf")) == "inf"
    assert format_value(float("nan")) == "nan"


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
    previous = {"format": RUN_FORMAT, "fingerprint": json.loads(json.dumps(_fp()))}
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


# -- sample names, the stored form, digests -------------------------------------------------------------


def test_sample_names_with_commas_and_quotes_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    rows = {"000001": (1.0,), "a,b": (2.0,), 'q"x': (3.0,), "000003,0.0": (4.0,)}
    write_table(path, ("d",), rows)
    assert read_table(path, ("d",)) == rows  # a comma in a name is quoted, never a second field


@pytest.mark.parametrize("name", ["000003,0.0\n000002", "a\rb", "a\u2028b", "a\x85b", "", "tab\tname"])
def test_names_that_would_break_a_line_are_refused(name: str, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    write_table(path, ("d",), {"000000": (1.0,)})
    w = ShardWriter(path, ("d",))
    with pytest.raises(ValueError, match=r"x\.csv: sample .* cannot be stored"):
        w.add(name, (0.0,))
    w.add("000001", (2.0,))
    w.flush()
    assert read_table(path, ("d",)) == {"000000": (1.0,), "000001": (2.0,)}  # the folder stays readable


@pytest.mark.parametrize(("text", "message"), [
    ("sample,d\na,1.0\na,2.0\n", r"x\.csv:3: sample 'a' appears twice"),
    ("sample,d\nb,1.0\na,2.0\n", r"x\.csv:3: sample 'a' is out of order"),
    ("sample,d\na,27.\n", r"x\.csv:2: .*not in the stored number form"),
    ("sample,d\na,1.0\n\nb,2.0\n", r"x\.csv:3: expected 2 fields"),
    ("sample,d\r\na,1.0\r\n", r"x\.csv: not in the form spips-bench writes"),
    ('sample,d\n"a\nb",1.0\n', r"x\.csv:3: sample 'a\\nb': it holds the control"),
])
def test_anything_but_the_stored_form_is_refused_naming_the_file(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(DatasetError, match=message):
        read_table(path, ("d",))


def test_invalid_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"sample,d\n\xff\xfe,1.0\n")
    with pytest.raises(DatasetError, match=r"x\.csv: not UTF-8 text .*remove it and rerun"):
        read_table(path, ("d",))
    (tmp_path / "run.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(RunConfigError, match=r"run\.json: not UTF-8 text"):
        ScoreStore(tmp_path).read_run()


def _stored_run(root: Path) -> ScoreStore:
    store = ScoreStore(root)
    store.write_run({"status": "running"})
    w = store.score_writer("2afc", "cnn", "psnr")
    for i in range(3):
        w.add(f"{i:06d}", (20.0 + i, 30.0 + i))
    w.flush()
    return store


@pytest.mark.parametrize("damage", ["swap", "extra", "cut"])
def test_a_store_file_changed_after_writing_is_refused(damage: str, tmp_path: Path) -> None:
    _stored_run(tmp_path)
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    path = tmp_path / "scores" / "2afc" / "cnn" / "psnr.csv"
    assert record["store"]["scores/2afc/cnn/psnr.csv"]["rows"] == 3
    rows = read_table(path, ("d0", "d1"))
    if damage == "swap":  # well-formed, only the values of d0 and d1 exchanged
        rows = {s: (b, a) for s, (a, b) in rows.items()}
    elif damage == "extra":
        rows["000003"] = (1.0, 2.0)
    else:  # a number cut short, still a number in its shortest form: 21.0 -> 2.0
        rows["000001"] = (2.0, rows["000001"][1])
    write_table(path, ("d0", "d1"), rows)
    with pytest.raises(DatasetError, match=r"psnr\.csv: its content does not match the digest .*run\.json.*"
                                           r"remove it and rerun"):
        ScoreStore(tmp_path).read_scores("2afc", "cnn", "psnr")
    path.unlink()  # the way out: the file's samples are scored again
    assert ScoreStore(tmp_path).read_scores("2afc", "cnn", "psnr") == {}


def test_a_kill_between_run_json_and_the_file_leaves_a_folder_that_verifies(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import spips_bench.run.store as store_module

    store = _stored_run(tmp_path)
    old = (tmp_path / "scores" / "2afc" / "cnn" / "psnr.csv").read_bytes()
    w = store.score_writer("2afc", "cnn", "psnr")
    w.add("000009", (1.0, 2.0))
    real = store_module.atomic_write_text

    def killed_at_the_score_file(path: Path, text: str) -> None:
        if path.name == "psnr.csv":
            raise KeyboardInterrupt  # run.json holds the new digest, the file is still the old one
        real(path, text)

    monkeypatch.setattr(store_module, "atomic_write_text", killed_at_the_score_file)
    with pytest.raises(KeyboardInterrupt):
        w.flush()
    monkeypatch.undo()
    assert (tmp_path / "scores" / "2afc" / "cnn" / "psnr.csv").read_bytes() == old
    entry = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))["store"]["scores/2afc/cnn/psnr.csv"]
    assert entry["rows"] == 4 and entry["replaces"]["rows"] == 3
    assert sorted(ScoreStore(tmp_path).read_scores("2afc", "cnn", "psnr")) == [f"{i:06d}" for i in range(3)]
    w.flush()  # the next flush writes the file; both stores now agree on the new version
    assert "000009" in ScoreStore(tmp_path).read_scores("2afc", "cnn", "psnr")


def test_a_store_file_run_json_does_not_record_is_refused(tmp_path: Path) -> None:
    _stored_run(tmp_path)
    write_table(tmp_path / "scores" / "2afc" / "cnn" / "ssim.csv", ("d0", "d1"), {"000000": (0.5, 0.6)})
    with pytest.raises(DatasetError, match=r"ssim\.csv: .*run\.json records no such store file"):
        ScoreStore(tmp_path).read_scores("2afc", "cnn", "ssim")


# -- the lock --------------------------------------------------------------------------------------------

_HOLDER = """
import fcntl, os, sys, time
from pathlib import Path
from spips_bench.run.store import ScoreStore
root, how = Path(sys.argv[1]), sys.argv[2]
if how == "raw":  # the lock taken without writing a pid: the file still names a dead process
    f = open(root / ".lock", "a+")
    fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("locked", flush=True)
    time.sleep(600)
with ScoreStore(root).lock():
    worker = os.fork()  # like a DataLoader worker: inherits the open lock file, outlives a kill -9
    if worker == 0:
        time.sleep(600)
        os._exit(0)
    print(f"locked {worker}", flush=True)
    time.sleep(600)
"""


def _holder(tmp_path: Path, how: str) -> tuple[Any, str]:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "run"), how],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()  # the event: the lock is held
    assert line.startswith("locked"), line
    return child, line


def test_a_killed_holder_frees_the_lock_at_once_even_with_forked_children(tmp_path: Path) -> None:
    import signal

    child, line = _holder(tmp_path, "store")
    worker = int(line.split()[1])
    try:
        refused = pytest.raises(RunConfigError, match=rf"in use by another spips-bench run \(pid {child.pid} holds")
        with refused, ScoreStore(tmp_path / "run").lock():
            pass
        child.send_signal(signal.SIGKILL)
        child.wait()
        with ScoreStore(tmp_path / "run").lock():  # the orphaned child is still alive, the lock is free
            os.kill(worker, 0)
    finally:
        child.kill()
        child.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


def test_the_refusal_names_the_live_holder_not_the_pid_in_the_file(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (tmp_path / "run" / ".lock").write_text(str(dead), encoding="utf-8")
    child, _ = _holder(tmp_path, "raw")
    try:
        with pytest.raises(RunConfigError) as refused, ScoreStore(tmp_path / "run").lock():
            pass
        assert f"pid {child.pid} holds the lock" in str(refused.value) and str(dead) not in str(refused.value)
    finally:
        child.kill()
        child.wait()
