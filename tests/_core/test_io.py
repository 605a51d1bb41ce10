"""Atomic writes: a failed write leaves the old file, strict JSON, the one step-file pattern."""

import json

import pytest

from perturbative._core.io import (
    atomic_write,
    json_safe,
    list_step_files,
    step_file,
    write_json,
    write_text,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    write_text(target, "old")

    def broken(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_json_is_strict(tmp_path):
    value = {"a": float("nan"), "b": [1.0, float("inf")], "c": (2, "x")}
    assert json_safe(value) == {"a": None, "b": [1.0, None], "c": [2, "x"]}
    path = write_json(tmp_path / "v.json", value)
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c))["a"] is None


def test_step_files_are_zero_padded_and_listed_by_step(tmp_path):
    for step in (250, 0, 5000):
        step_file(tmp_path, step).write_bytes(b"")
    (tmp_path / "step_latest.safetensors").write_bytes(b"")
    assert step_file(tmp_path, 250).name == "step_000250.safetensors"
    assert [s for s, _ in list_step_files(tmp_path)] == [0, 250, 5000]


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from perturbative._core.io import write_text

    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "report.html", "<p>hi</p>")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
