"""Extending a finished phase check: its settings, tournaments and pairs held to this one's, on
records written by hand (the whole extension on a real run: ``test_phase_order.py``)."""

import json

import pytest

from perturbative._core.errors import InputError
from perturbative.pipeline.phase_extend import (
    defaults_of,
    earlier_check,
    reproduced,
    tournaments_to_extend,
)
from perturbative.pipeline.phase_order import PhaseCheckOptions
from perturbative.pipeline.phase_records import TournamentRecord

T = "held-out loss"


def tournament(step=3, k=2) -> TournamentRecord:
    return TournamentRecord(
        step=step,
        k=k,
        lr=0.1,
        sources=["a", "b", "c"],
        real={T: [[0.0, 0.5, 0.2], [-0.5, 0.0, -0.1], [-0.2, 0.1, 0.0]]},
        floor={T: 1e-3},
        predicted={"composition": {T: [[0.0] * 3] * 3}},
        seconds={"real": 4.0, "composition": 1.0},
        cost={"composition": {"gradients": 12}},
    )


def written(folder, options: dict, finished=True) -> str:
    folder.mkdir(exist_ok=True)
    check = {
        "format": "perturbative phase check",
        "version": 1,
        "finished": finished,
        "run": "runs/x",
        "options": options,
        "targets": [T],
        "tournaments": [json.loads(json.dumps(tournament().__dict__))],
    }
    (folder / "phase_check.json").write_text(json.dumps(check))
    return str(folder)


def test_the_earlier_check_must_be_finished_and_made_alike(tmp_path):
    defaults = defaults_of(PhaseCheckOptions)
    settings = {k: v for k, v in defaults.items() if k not in ("out_dir", "from_check")}
    older = {k: v for k, v in settings.items() if k != "dtype"}  # made before --dtype existed
    assert earlier_check(written(tmp_path / "a", older), settings, defaults).finished
    with pytest.raises(InputError, match=r"--seed 0 there, 1 here\): pass its settings"):
        earlier_check(written(tmp_path / "b", older), {**settings, "seed": 1}, defaults)
    with pytest.raises(InputError, match=r"--dtype 'float64' there, 'float32' here"):
        earlier_check(written(tmp_path / "c", older), {**settings, "dtype": "float32"}, defaults)
    with pytest.raises(InputError, match="unfinished phase check: finish it first"):
        earlier_check(written(tmp_path / "d", older, finished=False), settings, defaults)


def test_its_tournaments_must_be_this_checks():
    check = type("Check", (), {"tournaments": [tournament(3, 2), tournament(3, 4)]})()
    assert set(tournaments_to_extend(check, [3], [2, 4])) == {(3, 2), (3, 4)}
    with pytest.raises(InputError, match=r"\(step, k\) \[\(3, 2\), \(3, 4\)\], this one"):
        tournaments_to_extend(check, [3, 6], [2, 4])


def test_a_tournament_is_kept_only_where_its_pairs_reproduce():
    earlier = tournament()
    kept = reproduced(earlier, ["a", "b", "c"], [T], {(0, 1): ([1.5], [1.0 + 1e-3])}, "runs/x")
    assert kept.real == earlier.real and kept.seconds == earlier.seconds
    assert kept.predicted == earlier.predicted and kept.predicted is not earlier.predicted
    # twice the floor is rounding; more is a changed run
    with pytest.raises(InputError, match=r"pair \(1, 2\) .* moves held-out loss by -0.104"):
        reproduced(earlier, ["a", "b", "c"], [T], {(1, 2): ([0.0], [0.104])}, "runs/x")
    with pytest.raises(InputError, match="drew the sources"):
        reproduced(earlier, ["a", "c", "b"], [T], {}, "runs/x")
    with pytest.raises(InputError, match="pass --target-source as it had it"):
        reproduced(earlier, ["a", "b", "c"], [T, "held-out loss of a"], {}, "runs/x")
    nan = tournament()
    nan.floor[T] = float("nan")  # an unmeasured floor reproduces nothing
    with pytest.raises(InputError, match="trained again"):
        reproduced(nan, ["a", "b", "c"], [T], {(0, 1): ([0.5], [0.0])}, "runs/x")
