"""The MOS datasets: TID2013, KADID-10k and PIPAL layouts, their bad inputs, the MOS demo set and the
KADID-10k downloader (against a local HTTP server on 127.0.0.1 only).

The fixtures are written by :func:`spips_bench.data.mos_demo.write_mos_layout`; what a test expects of a
reader (the scores, which reference goes with which image, the pixels) is computed here from the files
and the returned scores, not from the reader.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_download import Server

from spips_bench import cli
from spips_bench.data.bapps import collate
from spips_bench.data.download import MANIFEST_NAME, download_zip_dataset, zip_dataset
from spips_bench.data.mos_demo import MOS_DEMO_LABEL, ensure_mos_demo, write_mos_layout
from spips_bench.data.registry import MOSSet, dataset_names, get_dataset
from spips_bench.errors import DatasetError, DownloadError, ImageReadError, UnsafeArchiveError

LAYOUTS = {"tid2013": "tid2013", "kadid10k": "kadid10k", "pipal": "pipal"}  # dataset -> layout
SPLIT = {"tid2013": "all", "kadid10k": "all", "pipal": "train"}
W, H = 64, 48


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, float]]]:
    """Each layout once: 2 references x 2 types x 2 levels, 64 x 48 px; dataset -> (root, scores)."""
    base = tmp_path_factory.mktemp("mos")
    return {name: (base / name, write_mos_layout(base / name, layout, size=(W, H))) for name, layout in LAYOUTS.items()}


@pytest.fixture
def copy(written: dict[str, tuple[Path, dict[str, float]]], tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh copy of one layout's fixture, to damage: ``copy(name) -> (root, scores)``."""

    def make(name: str) -> tuple[Path, dict[str, float]]:
        src, scores = written[name]
        return Path(shutil.copytree(src, tmp_path / name)), scores

    return make


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0


def _reader(name: str, root: Path, category: str, load_size: int | None = None, **options: object):  # type: ignore[no-untyped-def]
    return get_dataset(name).reader(root, "mos", SPLIT[name], category, load_size, **options)


# -- reading the official layouts ------------------------------------------------------------------


# Per layout: the reference's file for a sample id, and the type codes (PIPAL counts from 00).
REFERENCE = {"tid2013": lambda n: f"reference_images/I{n[1:3]}.BMP", "kadid10k": lambda n: f"images/{n[:3]}.png",
             "pipal": lambda n: f"Train_Ref/{n[:5]}.bmp"}
TYPES = {"tid2013": ["01", "02"], "kadid10k": ["01", "02"], "pipal": ["00", "01"]}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_layout_is_read_by_name_at_its_native_size(name: str, written: dict) -> None:
    root, scores = written[name]
    ds = get_dataset(name)
    assert ds.locate(root) == root.resolve()
    assert ds.categories(root, "mos", SPLIT[name]) == TYPES[name]
    assert ds.plan(root, SPLIT[name], None, None) == [("mos", c) for c in TYPES[name]]
    seen = []
    for category in TYPES[name]:
        reader = _reader(name, root, category, report_problems=True)
        assert reader.pairing_error is None and reader.cache_state == "off" and not reader.use_cache()
        assert reader.names == sorted(reader.names) and len(reader) == 4
        assert reader.kind.name == "mos" and reader.image_parts == ("dist", "ref") and reader.judgment_part == "mos"
        assert reader.folder == root
        for i, sample in enumerate(reader.names):
            assert sample.split("_")[1] == category
            item = reader[i]
            assert item["name"] == sample
            assert item["mos"].dtype.is_floating_point and item["mos"].item() == pytest.approx(scores[sample], abs=1e-4)
            assert item["dist"].shape == item["ref"].shape == (3, H, W)
            ref = root / REFERENCE[name](sample)
            assert Path(item["files"]["ref"]).samefile(ref)
            assert Path(item["files"]["dist"]).stem.lower() == sample.lower()
            np.testing.assert_array_equal(item["ref"].numpy(), _pixels(ref))
            np.testing.assert_array_equal(item["dist"].numpy(), _pixels(Path(item["files"]["dist"])))
            assert not np.array_equal(item["dist"].numpy(), item["ref"].numpy())
        seen += reader.names
    assert sorted(seen) == sorted(scores)
    batch = collate([reader[0], reader[1]])
    assert batch["dist"].shape == (2, 3, H, W) and batch["mos"].shape == (2,) and "problems" not in batch


def test_the_scores_fall_with_the_distortion_level(written: dict) -> None:
    # The simulated observers rate the stronger level lower, per reference and type.
    for name, (_, scores) in written.items():
        by_pair: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for sample, value in scores.items():
            ref, kind, level = sample.split("_")
            by_pair.setdefault((ref, kind), []).append((int(level), value))
        assert len(by_pair) == 4
        for levels in by_pair.values():
            values = [v for _, v in sorted(levels)]
            assert len(values) == 2 and values[0] > values[1], (name, levels)


def test_tid2013_names_are_matched_whatever_their_case(copy) -> None:  # type: ignore[no-untyped-def]
    root, scores = copy("tid2013")
    files = sorted(p.name for p in (root / "distorted_images").iterdir())
    assert any(f.isupper() or f.endswith(".BMP") for f in files) and any(f.endswith(".bmp") for f in files)
    (root / "mos_with_names.txt").rename(root / "MOS_WITH_NAMES.TXT")
    (root / "distorted_images").rename(root / "Distorted_Images")
    reader = _reader("tid2013", root, "01")
    assert reader.pairing_error is None
    assert {reader[i]["name"]: reader[i]["mos"].item() for i in range(len(reader))} == pytest.approx(
        {k: v for k, v in scores.items() if k.split("_")[1] == "01"}, abs=1e-4)
    assert any(Path(reader[i]["files"]["dist"]).name.endswith(".BMP") for i in range(len(reader)))


def test_a_load_size_resizes_like_bapps(written: dict) -> None:
    root, _ = written["kadid10k"]
    item = _reader("kadid10k", root, "01", load_size=32)[0]
    assert item["dist"].shape == item["ref"].shape == (3, 32, 32)


# -- bad inputs, each named -----------------------------------------------------------------------


@pytest.mark.parametrize("part", ["dist", "ref"])
def test_a_missing_image_is_named_and_becomes_a_problem_item(copy, part: str) -> None:  # type: ignore[no-untyped-def]
    root, _ = copy("kadid10k")
    gone = root / "images" / ("I01_01_02.png" if part == "dist" else "I02.png")
    gone.unlink()
    with pytest.raises(DatasetError, match=r"I02\.png|I01_01_02\.png") as raised:
        _reader("kadid10k", root, "01")
    assert str(gone) in str(raised.value) and "dmos.csv:" in str(raised.value)
    reader = _reader("kadid10k", root, "01", report_problems=True)
    assert reader.pairing_error is not None and str(gone) in reader.pairing_error
    missing = ["I01_01_02"] if part == "dist" else ["I02_01_01", "I02_01_02"]
    assert reader.unpaired() == missing
    items = [reader[i] for i in range(len(reader))]
    problems = [it for it in items if "problem" in it]
    assert [p["name"] for p in problems] == missing
    assert problems[0]["problem"]["file"] == str(gone) and problems[0]["problem"]["error"] == "DatasetError"
    assert "not found" in problems[0]["problem"]["reason"]
    batch = collate(items)
    assert [p["name"] for p in batch["problems"]] == missing and len(batch["name"]) == 4 - len(missing)


def test_a_corrupt_image_is_a_problem_naming_the_file(copy) -> None:  # type: ignore[no-untyped-def]
    root, _ = copy("pipal")
    bad = root / "Train_Dis" / "A0001_00_01.bmp"
    bad.write_bytes(b"BM" + b"\0" * 20)
    reader = _reader("pipal", root, "00", report_problems=True)
    item = reader[reader.names.index("A0001_00_01")]
    assert item["problem"]["file"] == str(bad) and item["problem"]["error"] == "ImageReadError"
    with pytest.raises(ImageReadError, match=r"A0001_00_01\.bmp"):
        _reader("pipal", root, "00")[reader.names.index("A0001_00_01")]


def test_images_of_different_sizes_name_both_files(copy) -> None:  # type: ignore[no-untyped-def]
    root, _ = copy("tid2013")
    odd = root / "distorted_images" / "i01_01_1.bmp"
    Image.new("RGB", (W + 2, H), (9, 9, 9)).save(odd, format="BMP")
    item = _reader("tid2013", root, "01", report_problems=True)[0]
    reason = item["problem"]["reason"]
    assert item["problem"]["file"] == str(odd) and "I01.BMP" in reason and f"{W + 2}x{H} px" in reason
    assert f"{W}x{H} px" in reason


def test_an_image_below_min_size_names_the_metric_and_the_fix(written: dict) -> None:
    root, _ = written["kadid10k"]
    item = _reader("kadid10k", root, "01", report_problems=True, min_size=("some-metric", 49))[0]
    reason = item["problem"]["reason"]
    assert "some-metric" in reason and "--load-size" in reason and f"{W}x{H} px" in reason and "49x49" in reason
    assert "problem" not in _reader("kadid10k", root, "01", report_problems=True, min_size=("some-metric", 48))[0]
    assert "problem" not in _reader("kadid10k", root, "01", load_size=64, report_problems=True,
                                    min_size=("some-metric", 49))[0]


LABEL = {"tid2013": "mos_with_names.txt", "kadid10k": "dmos.csv", "pipal": "Train_Label/A0001.txt"}


@pytest.mark.parametrize(("name", "line", "expected"), [
    ("tid2013", "5.1 i01_01_1.bmp extra", "expected 'SCORE NAME'"),
    ("tid2013", "five i01_01_9.bmp", "'five' is not a number"),
    ("tid2013", "nan i01_01_9.bmp", "'nan' is not finite"),
    ("tid2013", "3.0 picture.bmp", "'picture.bmp' is not a distorted image name"),
    ("kadid10k", "I01_01_09.png,I01.png,inf,0.1", "'inf' is not finite"),
    ("kadid10k", "I01_01_09.png,I01.png", "2 field(s) where the header has 4"),
    ("pipal", "A0001_00_09.bmp;1500", "expected 'NAME,SCORE'"),
    ("pipal", "A0001_00_09.bmp,NaN", "'NaN' is not finite"),
])
def test_a_malformed_label_line_is_named_with_its_file_and_line(copy, name: str, line: str, expected: str,  # type: ignore[no-untyped-def]
                                                                 ) -> None:
    root, _ = copy(name)
    label = root / LABEL[name]
    before = label.read_text().splitlines()
    label.write_text("\n".join([*before, line]) + "\n")
    with pytest.raises(DatasetError) as raised:
        get_dataset(name).categories(root, "mos", SPLIT[name])
    message = str(raised.value)
    assert message.startswith(f"{label.resolve()}:{len(before) + 1}: ") and expected in message
    assert repr(line) in message


def test_a_duplicate_entry_names_both_lines(copy) -> None:  # type: ignore[no-untyped-def]
    root, _ = copy("tid2013")
    label = root / "mos_with_names.txt"
    lines = label.read_text().splitlines()
    label.write_text("\n".join([*lines, "4.0 I01_01_1.BMP"]) + "\n")
    with pytest.raises(DatasetError, match=r"listed twice \(first at .*mos_with_names.txt:1\)") as raised:
        get_dataset("tid2013").categories(root, "mos", "all")
    assert f"mos_with_names.txt:{len(lines) + 1}" in str(raised.value)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_an_empty_label_file_is_named(copy, name: str) -> None:  # type: ignore[no-untyped-def]
    root, _ = copy(name)
    (root / LABEL[name]).write_text("\n  \n")
    with pytest.raises(DatasetError, match="the label file is empty") as raised:
        get_dataset(name).categories(root, "mos", SPLIT[name])
    assert str(raised.value).startswith(str((root / LABEL[name]).resolve()))


def test_a_pipal_label_folder_without_label_files_is_named(copy) -> None:  # type: ignore[no-untyped-def]
    root, _ = copy("pipal")
    for f in (root / "Train_Label").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"Train_Label: no label files \(\*\.txt\)"):
        get_dataset("pipal").categories(root, "mos", "train")


def test_a_kadid_header_without_its_columns_is_named(copy) -> None:  # type: ignore[no-untyped-def]
    root, _ = copy("kadid10k")
    label = root / "dmos.csv"
    label.write_text(label.read_text().replace("dist_img,ref_img,dmos,var", "image,reference,score,var"))
    with pytest.raises(DatasetError, match=r"dmos.csv:1: .*lacks the column\(s\) dist_img, ref_img, dmos"):
        get_dataset("kadid10k").categories(root, "mos", "all")


def test_an_unknown_type_lists_the_known_ones(written: dict) -> None:
    root, _ = written["tid2013"]
    with pytest.raises(ValueError, match=r"no distortion type '07'.*choose from 01, 02"):
        _reader("tid2013", root, "07")
    with pytest.raises(ValueError, match="no category '07'"):
        get_dataset("tid2013").plan(root, "all", None, ["07"])


# -- listing, locate, registry ----------------------------------------------------------------------


def test_the_listing_names_each_samples_files_with_their_sizes(copy) -> None:  # type: ignore[no-untyped-def]
    root, scores = copy("kadid10k")
    listing = get_dataset("kadid10k").listing(root, "mos", "all", "02")
    assert listing == sorted(listing) and len(listing) == 3 * 4
    assert {s for s, _ in listing} == {k for k in scores if k.split("_")[1] == "02"}
    dist = root / "images" / "I01_02_01.png"
    assert ("I01_02_01", f"images/I01_02_01.png {dist.stat().st_size}") in listing
    assert ("I01_02_01", f"images/I01.png {(root / 'images' / 'I01.png').stat().st_size}") in listing
    assert ("I01_02_01", f"dmos.csv: {scores['I01_02_01']:.2f}") in listing
    with dist.open("ab") as fh:
        fh.write(b"\0")
    changed = get_dataset("kadid10k").listing(root, "mos", "all", "02")
    assert changed != listing and get_dataset("kadid10k").listing(root, "mos", "all", "01") != changed


@pytest.mark.parametrize(("name", "expected"), [("tid2013", "mos_with_names.txt"), ("kadid10k", "dmos.csv"),
                                                ("pipal", "Train_Label")])
def test_locate_names_the_label_file_the_layout_and_the_steps(name: str, expected: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ds = get_dataset(name)
    assert ds.default_root() == tmp_path / "datasets" / name
    with pytest.raises(DatasetError) as raised:
        ds.locate(None)
    message = str(raised.value)
    assert message.startswith(str(tmp_path / "datasets" / name / expected)) and "expected layout: ROOT/" in message
    assert "1. " in message and ds.steps[0][:40] in message  # type: ignore[attr-defined]


def test_the_registry_lists_the_four_mos_datasets_from_their_cards() -> None:
    names = dataset_names()
    assert names[:2] == ["bapps", "demo"] and {"tid2013", "kadid10k", "pipal", "mos-demo"} <= set(names)
    for name, n_types in (("tid2013", 24), ("kadid10k", 25), ("pipal", 0), ("mos-demo", 5)):
        ds = get_dataset(name)
        assert isinstance(ds, MOSSet) and ds.kind_names() == ["mos"] and ds.source == "builtin"
        assert len(ds.mos.distortions) == n_types and ds.citation and ds.steps
    tid, kadid, pipal = get_dataset("tid2013"), get_dataset("kadid10k"), get_dataset("pipal")
    assert tid.category_title("01") == "additive Gaussian noise"  # type: ignore[attr-defined]
    assert tid.category_title("24") == "sparse sampling and reconstruction"  # type: ignore[attr-defined]
    assert kadid.category_title("25") == "contrast change"  # type: ignore[attr-defined]
    assert pipal.category_title("03") == "type 03"  # type: ignore[attr-defined]
    assert tid.kinds_of("all") == ["mos"] and pipal.kinds_of("train") == ["mos"] and pipal.kinds_of("all") == []
    assert tid.report_title("all") == "TID2013" and pipal.report_title("train") == "PIPAL train"
    assert not tid.synthetic and get_dataset("mos-demo").synthetic
    with pytest.raises(ValueError, match="split"):
        get_dataset("tid2013").reader(Path("."), "mos", "val", "01", None)


def test_the_mos_cards_are_read_without_torch() -> None:
    code = ("import sys; from spips_bench.data.registry import get_dataset; "
            "print(get_dataset('kadid10k').category_title('01'), get_dataset('mos-demo').synthetic); "
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Gaussian blur True"


# -- the MOS demo set -------------------------------------------------------------------------------


def test_the_mos_demo_is_generated_once_and_labelled_synthetic(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIPS_BENCH_CACHE", str(tmp_path / "cache"))
    ds = get_dataset("mos-demo")
    root = ds.locate(None)
    assert root == (tmp_path / "cache" / "mos-demo-v1").resolve()
    assert ds.report_title("all") == f"MOS demo set ({MOS_DEMO_LABEL})" and "synthetic" in ds.report_title("all")
    assert "NOT human" in (root / "README.txt").read_text()
    stamp = (root / "dmos.csv").stat().st_mtime_ns
    assert ds.locate(None) == root and (root / "dmos.csv").stat().st_mtime_ns == stamp  # reused, not rewritten
    categories = ds.categories(root, "mos", "all")
    assert categories == ["01", "02", "03", "04", "05"]
    assert [ds.category_title(c) for c in categories][:3] == ["Gaussian noise", "Gaussian blur",  # type: ignore[attr-defined]
                                                             "JPEG compression"]
    readers = [ds.reader(root, "mos", "all", c, None, report_problems=True, min_size=("m", 161)) for c in categories]
    assert sum(len(r) for r in readers) == 150 and all(r.pairing_error is None for r in readers)
    item = readers[2][0]
    assert "problem" not in item and item["dist"].shape == (3, 168, 224) and 1.0 <= item["mos"].item() <= 5.0
    assert sorted(p.name for p in tmp_path.joinpath("cache").iterdir()) == ["mos-demo-v1"]  # no temporary left


def test_the_mos_demo_refuses_a_folder_that_is_not_one(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["download", "mos-demo", "--root", str(tmp_path / "m")]) == 0
    assert "not human" in capsys.readouterr().out and (tmp_path / "m" / "dmos.csv").is_file()
    assert cli.main(["download", "mos-demo", "--root", str(tmp_path / "m"), "--sha256", "0" * 64]) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DatasetError, match="is not a spips-bench MOS demo set"):
        ensure_mos_demo(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


# -- the KADID-10k downloader, against 127.0.0.1 ----------------------------------------------------


def _ranges(server: Server) -> list[str | None]:
    """The Range header of every request the server answered."""
    return [rng for _, rng in server.requests]


def kadid_zip(source: Path, extra: list[tuple[zipfile.ZipInfo | str, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    """``source`` (a KADID-10k-layout folder) as the official archive lays it out: ``kadid10k/...``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                zf.writestr(f"kadid10k/{path.relative_to(source).as_posix()}", path.read_bytes())
        for info, data in extra:
            zf.writestr(info, data)
    return buf.getvalue()


def fetch_kadid(root: Path, url: str, **options: object):  # type: ignore[no-untyped-def]
    options.setdefault("log", lambda _m: None)
    return download_zip_dataset(root, zip_dataset("kadid10k"), url=url + "kadid10k.zip", progress=False,
                                timeout=5.0, backoff=0.01, **options)  # type: ignore[arg-type]


def test_kadid_needs_a_pinned_hash_then_unpacks_the_kept_file(server: Server, written: dict,
                                                             tmp_path: Path) -> None:
    archive = kadid_zip(written["kadid10k"][0])
    digest = hashlib.sha256(archive).hexdigest()
    server.files["kadid10k.zip"] = archive
    root = tmp_path / "kadid"
    with pytest.raises(DownloadError) as raised:
        fetch_kadid(root, server.url)
    message = str(raised.value)
    assert message.startswith(str(root / "kadid10k.zip")) and digest in message and "--sha256" in message
    assert (root / "kadid10k.zip").read_bytes() == archive and not (root / "images").exists()
    result = fetch_kadid(root, server.url, sha256=digest.upper())
    assert len(_ranges(server)) == 1  # the kept file was used: no second request
    assert result.extracted and not result.downloaded and result.sha256 == digest
    assert sorted(p.name for p in root.iterdir()) == [MANIFEST_NAME, "dmos.csv", "images"]
    assert json.loads((root / MANIFEST_NAME).read_text())["files"]["kadid10k.zip"]["sha256"] == digest
    reader = _reader("kadid10k", get_dataset("kadid10k").locate(root), "01")
    assert reader.names == ["I01_01_01", "I01_01_02", "I02_01_01", "I02_01_02"]
    again = fetch_kadid(root, server.url)
    assert not again.downloaded and not again.extracted and len(_ranges(server)) == 1


def test_kadid_download_resumes_a_partial_file(server: Server, written: dict, tmp_path: Path) -> None:
    archive = kadid_zip(written["kadid10k"][0])
    server.files["kadid10k.zip"] = archive
    root = tmp_path / "kadid"
    root.mkdir()
    half = len(archive) // 2
    (root / "kadid10k.zip.part").write_bytes(archive[:half])
    server.break_next = 1  # and the resumed transfer breaks once more
    result = fetch_kadid(root, server.url, sha256=hashlib.sha256(archive).hexdigest(), retries=2)
    ranges = _ranges(server)
    assert ranges[0] == f"bytes={half}-" and ranges[1] == f"bytes={half + (len(archive) - half) // 2}-"
    assert result.downloaded and result.extracted and (root / "dmos.csv").is_file()


def test_kadid_hash_mismatch_names_the_file_and_both_hashes(server: Server, written: dict,
                                                           tmp_path: Path) -> None:
    archive = kadid_zip(written["kadid10k"][0])
    server.files["kadid10k.zip"] = archive
    wrong = "0" * 64
    with pytest.raises(DownloadError) as raised:
        fetch_kadid(tmp_path, server.url, sha256=wrong)
    message = str(raised.value)
    assert "kadid10k.zip" in message and wrong in message and hashlib.sha256(archive).hexdigest() in message
    assert (tmp_path / "kadid10k.zip.rejected").read_bytes() == archive and not (tmp_path / "images").exists()


def _link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(("member", "expected"), [("kadid10k/../../evil.txt", "climbs out"),
                                                  ("/tmp/evil.txt", "absolute path"),
                                                  (_link("kadid10k/images/link.png"), "is a link")])
def test_kadid_archive_with_an_unsafe_member_is_refused(server: Server, written: dict, tmp_path: Path,
                                                        member: zipfile.ZipInfo | str, expected: str) -> None:
    archive = kadid_zip(written["kadid10k"][0], [(member, b"/etc/passwd")])
    server.files["kadid10k.zip"] = archive
    root = tmp_path / "deep" / "kadid"
    with pytest.raises(UnsafeArchiveError, match=expected):
        fetch_kadid(root, server.url, sha256=hashlib.sha256(archive).hexdigest())
    assert sorted(p.name for p in root.iterdir()) == ["kadid10k.zip"]  # nothing unpacked, no temporary left
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()


def test_kadid_archive_without_its_label_file_is_refused(server: Server, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("kadid10k/images/I01.png", b"x")
    server.files["kadid10k.zip"] = buf.getvalue()
    with pytest.raises(UnsafeArchiveError, match=r"no dmos\.csv inside"):
        fetch_kadid(tmp_path, server.url, sha256=hashlib.sha256(buf.getvalue()).hexdigest())


def test_cli_download_kadid_and_the_steps_of_the_others(server: Server, written: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    archive = kadid_zip(written["kadid10k"][0])
    server.files["kadid10k.zip"] = archive
    digest = hashlib.sha256(archive).hexdigest()
    argv = ["download", "kadid10k", "--root", str(tmp_path / "k"), "--url", server.url + "kadid10k.zip",
            "--no-progress"]
    assert cli.main(argv) == 2
    assert digest in capsys.readouterr().err
    assert cli.main([*argv, "--sha256", digest]) == 0
    assert "extracted, sha256 " + digest in capsys.readouterr().out
    for name, url in (("tid2013", "ponomarenko.info"), ("pipal", "jasongt.com")):
        assert cli.main(["download", name, "--root", str(tmp_path / name)]) == 2
        out = capsys.readouterr()
        assert "1. " in out.out and url in out.out and "must be downloaded by hand" in out.err
        assert not (tmp_path / name).exists()
    assert cli.main(["download", "tid2013", "--sha256", digest]) == 2
    with pytest.raises(SystemExit):
        cli.main(["download", "kadid10k", "--split", "nope"])
