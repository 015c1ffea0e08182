"""spips_bench.settings: the one module that reads the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from spips_bench import settings, weights
from spips_bench.cli import main

PACKAGE = Path(settings.__file__).parent
README = PACKAGE.parent / "README.md"


def test_no_other_module_reads_the_environment() -> None:
    reads = re.compile(r"os\.environ\s*(\.get|\[)|os\.getenv|environ\.get")
    offenders = [f"{p.relative_to(PACKAGE)}:{i}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "settings.py"
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if reads.search(line)]
    assert offenders == []


def test_every_variable_is_listed_in_the_readme() -> None:
    section = README.read_text(encoding="utf-8").split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    for name in settings.ALL:
        assert f"`{name}`" in section, name


def test_bapps_root_one_name_for_every_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from spips_bench.data.bapps import default_bapps_root

    monkeypatch.delenv(settings.BAPPS, raising=False)
    monkeypatch.delenv(settings.DEPRECATED_BAPPS, raising=False)
    monkeypatch.chdir(tmp_path)
    assert settings.bapps_root() == (tmp_path / "datasets" / "bapps", None)
    monkeypatch.setenv(settings.BAPPS, str(tmp_path / "b"))
    assert settings.bapps_root() == (tmp_path / "b", settings.BAPPS)
    assert default_bapps_root() == tmp_path / "b"  # what download and train use


def test_the_old_variable_still_works_with_a_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(settings.BAPPS, raising=False)
    monkeypatch.setenv(settings.DEPRECATED_BAPPS, str(tmp_path / "old"))
    assert settings.bapps_root() == (tmp_path / "old", settings.DEPRECATED_BAPPS)
    assert capsys.readouterr().err == ("warning: $SPIPS_BENCH_DATA is deprecated; rename it to $SPIPS_BENCH_BAPPS "
                                       "(read by run, train and download alike).\n")
    monkeypatch.setenv(settings.BAPPS, str(tmp_path / "new"))
    assert settings.bapps_root() == (tmp_path / "new", settings.BAPPS)
    assert f"$SPIPS_BENCH_DATA={tmp_path / 'old'} is ignored: $SPIPS_BENCH_BAPPS=" in capsys.readouterr().err


def test_offline_mode_is_a_switch_not_an_environment_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.OFFLINE, raising=False)
    assert not settings.offline() and not weights.is_offline()
    with settings.offline_mode():
        with settings.offline_mode(False):
            assert weights.is_offline()  # an inner "off" does not undo an outer "on"
        assert weights.is_offline() and settings.OFFLINE not in os.environ
    assert not weights.is_offline()
    for value, expected in (("1", True), ("yes", True), ("ON", True), ("0", False), ("", False)):
        monkeypatch.setenv(settings.OFFLINE, value)
        assert settings.offline() is expected


def test_the_cli_offline_flag_is_scoped_to_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import spips_bench.cli.score as command

    monkeypatch.delenv(settings.OFFLINE, raising=False)
    seen: list[bool] = []
    monkeypatch.setattr(command, "run", lambda args: seen.append(weights.is_offline()) or 0)
    assert main(["score", "a.png", "b.png", "--offline"]) == 0  # the parser takes run from the module
    assert main(["score", "a.png", "b.png"]) == 0
    assert seen == [True, False]
    assert settings.OFFLINE not in os.environ and not weights.is_offline()


def test_caches_follow_their_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (settings.CACHE, settings.TORCH_HOME, settings.WEIGHTS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(settings.XDG_CACHE_HOME, str(tmp_path / "xdg"))
    assert settings.cache_dir() == tmp_path / "xdg" / "spips-bench"
    assert settings.torch_home() == tmp_path / "xdg" / "torch"
    assert settings.weights_dir() is None
    monkeypatch.setenv(settings.CACHE, str(tmp_path / "c"))
    monkeypatch.setenv(settings.TORCH_HOME, str(tmp_path / "t"))
    monkeypatch.setenv(settings.WEIGHTS, str(tmp_path / "w"))
    assert settings.cache_dir() == tmp_path / "c" and settings.weights_dir() == tmp_path / "w"
    assert settings.torch_home() == tmp_path / "t"


def test_distributed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.WORLD_SIZE, raising=False)
    monkeypatch.delenv(settings.LOCAL_RANK, raising=False)
    assert settings.distributed() == (1, 0)
    monkeypatch.setenv(settings.WORLD_SIZE, "4")
    monkeypatch.setenv(settings.LOCAL_RANK, "2")
    assert settings.distributed() == (4, 2)
    monkeypatch.setenv(settings.WORLD_SIZE, "four")
    with pytest.raises(ValueError, match=r"\$WORLD_SIZE='four' is not a whole number"):
        settings.distributed()
