"""The suite's own guard: a disk too full for the slow tests' files is refused at start."""

import shutil
import types

import conftest
import pytest


def _session(basetemp, markexpr=""):
    return types.SimpleNamespace(
        config=types.SimpleNamespace(option=types.SimpleNamespace(basetemp=basetemp,
                                                                  markexpr=markexpr))
    )  # fmt: skip


def test_a_full_disk_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2 * 2**30))
    missing = tmp_path / "not" / "made" / "yet"  # --basetemp need not exist yet.
    with pytest.raises(pytest.exit.Exception) as refused:
        conftest.pytest_sessionstart(_session(str(missing)))
    assert str(refused.value) == (
        f"the tests need 6 GiB free for temporary files in {tmp_path}, which has 2.0 GiB: "
        "free some space, or pass --basetemp=DIR on a larger disk"
    )
    assert refused.value.returncode == pytest.ExitCode.USAGE_ERROR
    conftest.pytest_sessionstart(_session(str(missing), markexpr="not slow"))  # Writes little.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=6 * 2**30))
    conftest.pytest_sessionstart(_session(str(missing)))
