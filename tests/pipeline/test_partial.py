"""``pipeline/partial.py``: the progress file of an unfinished check."""

import json

import pytest

from perturbative._core.errors import InputError
from perturbative.pipeline.partial import PartialCheck


def test_finished_units_are_kept_and_only_missing_ones_computed(tmp_path):
    header = {"options": {"pairs": 2}, "checkpoints": {"10": "abc"}}
    first = PartialCheck.open(tmp_path, header, progress="p.jsonl", finished="done.json")
    assert first.get((10, "pair", 0), lambda: {"real": 1.5}) == {"real": 1.5}
    with (tmp_path / "p.jsonl").open("a") as f:
        f.write('{"key": "10/pair/1", "val')  # a line cut short when the check stopped
    again = PartialCheck.open(tmp_path, header, progress="p.jsonl", finished="done.json")
    computed = []
    assert again.get((10, "pair", 0), lambda: computed.append(0)) == {"real": 1.5}
    assert again.get((10, "pair", 1), lambda: computed.append(1) or 2.0) == 2.0
    assert computed == [1]
    assert again.find((10, "pair", 0)) == {"real": 1.5} and again.find((10, "pair", 2)) is None
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert lines[0] == header and len(lines) == 3
    again.finish()
    assert not (tmp_path / "p.jsonl").exists()


def test_other_settings_changed_checkpoints_and_finished_checks_are_refused(tmp_path):
    header = {"options": {"pairs": 2}, "checkpoints": {"10": "abc"}}
    PartialCheck.open(tmp_path, header, progress="p.jsonl", finished="done.json")
    other = {"options": {"pairs": 3}, "checkpoints": {"10": "abc"}}
    with pytest.raises(InputError, match="with other settings \\(pairs: 2 there, 3 now\\)"):
        PartialCheck.open(tmp_path, other, progress="p.jsonl", finished="done.json", what="x")
    moved = {"options": {"pairs": 2}, "checkpoints": {"10": "def"}}
    with pytest.raises(InputError, match="checkpoints that have changed since"):
        PartialCheck.open(tmp_path, moved, progress="p.jsonl", finished="done.json")
    (tmp_path / "p.jsonl").unlink()
    (tmp_path / "done.json").write_text("{}")
    with pytest.raises(InputError, match="already holds a finished x"):
        PartialCheck.open(tmp_path, header, progress="p.jsonl", finished="done.json", what="x")
