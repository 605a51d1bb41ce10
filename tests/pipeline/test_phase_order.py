"""The phase check on a tiny real run: phase orders predicted, against really training them."""

import dataclasses
import importlib
import json

import numpy as np
import pytest
from cases import run_benchmark, tiny_digits_run

from perturbative._core.errors import InputError
from perturbative.pipeline.phase_order import (
    PROGRESS,
    PhaseCheckOptions,
    phase_check,
    phase_draws,
)
from perturbative.pipeline.phase_summary import VALUE_METHODS
from perturbative.pipeline.results import read_phase_check_file
from perturbative.pipeline.run import training_task
from perturbative.pipeline.task import Task

# the module that trains and predicts each tournament, whose calls the tests count
tournament_module = importlib.import_module("perturbative.pipeline.phase_tournament")
TINY = dict(steps=(3,), ks=(1, 2), sources=3, triples=1, triple_ks=(1,), heldout_examples=8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_digits_run(tmp_path_factory.mktemp("runs") / "run")


@pytest.fixture(scope="module")
def whole(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("checks") / "whole"
    phase_check(run_dir, PhaseCheckOptions(**TINY, out_dir=str(out)), progress=False)
    return out


def test_every_pair_is_trained_both_ways_and_every_method_predicts_it(whole):
    check = read_phase_check_file(whole)
    records = check.tournaments
    assert check.finished and [(r.step, r.k) for r in records] == [(3, 1), (3, 2)]
    targets = check.targets
    assert targets[0] == "held-out loss" and targets[1].startswith("held-out loss of digit_")
    for record in records:
        assert len(record.sources) == 3 and all(s.startswith("digit_") for s in record.sources)
        for target in targets:
            real = np.asarray(record.real[target])
            np.testing.assert_allclose(real, -real.T)
            assert np.abs(real[np.triu_indices(3, 1)]).min() > 10 * record.floor[target]
            assert record.floor[target] < 1e-12  # float64: rows reversed change only rounding
            for by_target in record.predicted.values():
                matrix = np.asarray(by_target[target])
                np.testing.assert_allclose(matrix, -matrix.T, atol=1e-300)
        assert set(record.predicted) >= {*VALUE_METHODS} - {"expansion"} | {"coin"}
        assert ("expansion" in record.predicted) == (record.k == 1)
        assert record.seconds["real"] > 0 and record.cost["composition"]["backward_passes"] == 3
        # the anchor (a phase of the three sources' mixture) once, each source before and after
        assert record.cost["anchored"]["gradients"] == (3 * 3 + 1) * record.k
        assert record.cost["anchored-alone"]["gradients"] == 2 * 3 * record.k
        assert record.cost["anchored"]["gradients_to_train_every_pair_both_ways"] == 9 * record.k
    (triple,) = records[0].triples
    assert len(triple.orders) == 6 and len(triple.real[targets[0]]) == 6
    # at k = 1 the expansion predicts O after each order; the others rank by preferences
    assert set(triple.predicted) == {"expansion"}
    assert len(triple.predicted["expansion"][targets[1]]) == 6
    assert records[1].triples == []
    row = check.summary.rows["held-out loss"][1]
    assert row.pairs == 3 and row.methods["composition"].triples == 1
    assert 0 <= row.methods["composition"].sign_accuracy <= 1


def test_the_results_scripts_read_a_check(run_dir, whole, capsys):
    """benchmarks/phase_tables.py, phase_potentials.py and phase_cycle_sources.py print the
    page's tables, the potential's share and the cycle's split from a finished check."""
    run_benchmark("phase_tables.py", str(whole))
    tables = capsys.readouterr().out
    assert tables.startswith("**held-out loss** (sign accuracy") and "| 2 | 3/3 |" in tables
    assert "anchored" in tables.splitlines()[2]
    run_benchmark("phase_potentials.py", str(whole))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 2 * 2 and "a potential explains R^2" in lines[1]
    assert "one source as the anchor" in lines[1] and "anchored-cycle" in lines[1]
    assert "the anchors' potentials against the fitted one: anchored " in lines[1]
    assert "the two anchors agree on " in lines[1]
    run_benchmark("phase_cycle_sources.py", str(run_dir), str(whole))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 2 * 2 and "pairs the cycle held both" in lines[2]


def test_the_pairs_benchmark_times_both_ways_of_training_every_pair(run_dir, capsys):
    """benchmarks/phase_pairs.py: every pair from the checkpoint and branched, with the run's
    own step, the same tournament to the last bit, the anchored methods timed beside them."""
    run_benchmark("phase_pairs.py", "--run-dir", str(run_dir), "--step", "3", "--sources", "3",
                  "--ks", "1", "--threads", "1")  # fmt: skip
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("k=1, 3 sources: from the start ")
    assert "branched" in line and "(1.00)" in line and "anchored-alone" in line
    assert "steps 12 / 9 / 10 / 6" in line
    assert line.endswith("largest difference between the two real tournaments 0.0e+00")


def counted(monkeypatch, calls, stop_after=None):
    """Count the check's real training (an order from the checkpoint, or the phases after one
    first phase), raising KeyboardInterrupt at call ``stop_after``, as under Ctrl-C."""
    for name in ("values_along_steps", "values_after_each"):
        real = getattr(tournament_module, name)

        def counting(*args, real=real, name=name, **kwargs):
            if len(calls) == stop_after:
                raise KeyboardInterrupt
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(tournament_module, name, counting)


def test_a_stopped_check_continues_where_it_stopped(run_dir, whole, tmp_path, monkeypatch):
    options = PhaseCheckOptions(**TINY, out_dir=str(tmp_path / "check"))
    calls = []
    with monkeypatch.context() as patched:
        counted(patched, calls, stop_after=2)
        with pytest.raises(KeyboardInterrupt):
            phase_check(run_dir, options, progress=False)
    progress = tmp_path / "check" / PROGRESS
    # the settings, then sources 0 and 1 each followed by every other
    assert len(progress.read_text().splitlines()) == 1 + 2
    assert calls == ["values_after_each"] * 2
    calls.clear()
    with monkeypatch.context() as patched:
        counted(patched, calls)
        phase_check(run_dir, options, progress=False)
    # k = 1: source 2's phases after it, the floor (2 orders), the triple's 6 orders; then
    # k = 2: 3 first phases, the floor
    assert calls == (["values_after_each"] + ["values_along_steps"] * 8 + ["values_after_each"] * 3
                     + ["values_along_steps"] * 2)  # fmt: skip
    assert not progress.exists()
    resumed = read_phase_check_file(tmp_path / "check").tournaments
    assert resumed[0].seconds["real"] > 0  # each unit's time was saved with it
    unbroken = read_phase_check_file(whole).tournaments
    for a, b in zip(resumed, unbroken, strict=True):
        assert a.real == b.real and a.floor == b.floor and a.triples == b.triples
        assert a.predicted.keys() == b.predicted.keys()
        for method, by_target in a.predicted.items():
            for target, matrix in by_target.items():
                np.testing.assert_allclose(matrix, b.predicted[method][target], rtol=1e-9)
    with pytest.raises(InputError, match="already holds a finished phase check"):
        phase_check(run_dir, options, progress=False)
    other = dataclasses.replace(options, out_dir=str(tmp_path / "other"), ks=(1,))
    with monkeypatch.context() as patched:
        counted(patched, calls, stop_after=len(calls))
        with pytest.raises(KeyboardInterrupt):
            phase_check(run_dir, other, progress=False)
    with pytest.raises(InputError, match=r"ks: \[1\] there, \[2\] now"):
        phase_check(run_dir, dataclasses.replace(other, ks=(2,)), progress=False)
    assert json.loads(progress.parent.joinpath("phase_check.json").read_text())["finished"]


def test_a_check_stopped_by_the_earlier_version_keeps_its_pairs(run_dir, tmp_path, monkeypatch):
    """A check begun by the version that trained each pair both ways from the checkpoint saved
    one unit per pair: continued, its pairs are read back rather than trained again."""
    options = PhaseCheckOptions(**TINY, out_dir=str(tmp_path / "check"))
    calls = []
    with monkeypatch.context() as patched:
        counted(patched, calls, stop_after=0)
        with pytest.raises(KeyboardInterrupt):
            phase_check(run_dir, options, progress=False)
    progress = tmp_path / "check" / PROGRESS
    saved = {
        (i, j): [[1.0 + i, 2.0 * j], [3 + 0.5 * j, 0.25 + i]] for i, j in ((0, 1), (0, 2), (1, 2))
    }
    with progress.open("a") as file:
        for (i, j), values in saved.items():
            unit = {"key": f"3/1/pair/{i}/{j}", "value": {"values": values, "seconds": 1.0}}
            file.write(json.dumps(unit) + "\n")
    with monkeypatch.context() as patched:
        counted(patched, calls)
        phase_check(run_dir, options, progress=False)
    assert calls.count("values_after_each") == 3  # k = 2's first phases only
    record = read_phase_check_file(tmp_path / "check").tournaments[0]
    for (i, j), (ij, ji) in saved.items():
        for x, target in enumerate(record.real):
            assert record.real[target][i][j] == ij[x] - ji[x]
            assert record.real[target][j][i] == ji[x] - ij[x]
    assert record.seconds["real"] == 3.0


def test_the_cpu_named_gives_the_default_numbers_and_float32_its_own_floor(
    run_dir, whole, tmp_path
):
    """The run trained on the CPU: ``device="cpu"`` is the default check, number for number;
    in float32 the real tournament agrees with float64's to float32 rounding, above a floor
    that is float32's (rows reversed), and each checkpoint's cost is kept."""
    kept = read_phase_check_file(whole)
    cpu = tmp_path / "cpu"
    phase_check(run_dir, PhaseCheckOptions(**TINY, device="cpu", out_dir=str(cpu)), False)
    again = read_phase_check_file(cpu)
    assert [r.real for r in again.tournaments] == [r.real for r in kept.tournaments]
    assert [r.predicted for r in again.tournaments] == [r.predicted for r in kept.tournaments]
    low = tmp_path / "float32"
    phase_check(run_dir, PhaseCheckOptions(**TINY, dtype="float32", out_dir=str(low)), False)
    single = read_phase_check_file(low)
    target = kept.targets[0]
    for a, b in zip(single.tournaments, kept.tournaments, strict=True):
        real, exact = np.asarray(a.real[target]), np.asarray(b.real[target])
        np.testing.assert_allclose(real, exact, rtol=1e-3, atol=1e-6)
        assert 1e-12 < a.floor[target] < 1e-5
    assert set(single.costs) == {"3"} and single.costs["3"]["seconds"] > 0
    assert single.cost_lines()[0].startswith("step 3: ")


def test_bad_input_is_refused_with_what_to_do(run_dir, tmp_path):
    options = PhaseCheckOptions(**TINY, out_dir=str(tmp_path / "bad"))
    with pytest.raises(InputError, match="batchnorm must be 'batch' or 'running'"):
        phase_check(run_dir, dataclasses.replace(options, batchnorm="magic"))
    with pytest.raises(InputError, match="dtype must be one of"):
        phase_check(run_dir, dataclasses.replace(options, dtype="float16"))
    with pytest.raises(InputError, match="no checkpoint at step"):
        phase_check(run_dir, dataclasses.replace(options, steps=(4,)), progress=False)
    with pytest.raises(InputError, match="no held-out source 'digit_11'"):
        phase_check(run_dir, dataclasses.replace(options, target_source="digit_11"))
    with pytest.raises(InputError, match="cannot import the task's module 'x'"):
        phase_check(run_dir, options, task="x:y", progress=False)

    own = training_task(run_dir)
    bare = Task(model=own.model, loss_fn=own.loss_fn, train=own.train)
    with pytest.raises(InputError, match=r"give Task\(sources="):
        phase_check(run_dir, options, task=bare, progress=False)


def test_batchnorm_on_running_statistics_is_a_diagnostic_of_one_source_batches(
    run_dir, whole, tmp_path
):
    options = PhaseCheckOptions(
        **{**TINY, "ks": (1,), "triples": 0}, batchnorm="running", out_dir=str(tmp_path / "bn")
    )
    (record,) = read_phase_check_file(
        phase_check(run_dir, options, progress=False).parent
    ).tournaments
    batch, _ = read_phase_check_file(whole).tournaments
    assert record.sources == batch.sources  # the same phases, met in eval mode
    assert record.real != batch.real


def test_the_cycle_anchor_is_one_source_per_batch_in_turn(run_dir, tmp_path, monkeypatch):
    """The second anchored method's anchor: each batch all of one source, the sources taken in
    turn; the mixture anchor's batches mix them, and the third method reads the mixture's."""
    anchors = []
    real = tournament_module.anchored_tournaments

    def recording(model, loss_fn, step, phases, targets, anchor, alone):
        anchors.append([set(batch[1].argmax(1).tolist()) for batch in anchor])  # one-hot digits
        return real(model, loss_fn, step, phases, targets, anchor, alone=alone)

    monkeypatch.setattr(tournament_module, "anchored_tournaments", recording)
    options = PhaseCheckOptions(**{**TINY, "ks": (4,), "triples": 0}, out_dir=str(tmp_path))
    (record,) = read_phase_check_file(phase_check(run_dir, options, False).parent).tournaments
    mixture, cycle, alone = anchors
    assert alone == mixture
    labels = {int(s.removeprefix("digit_")) for s in record.sources}
    assert set().union(*mixture) <= labels and max(map(len, mixture)) > 1
    assert all(len(b) == 1 for b in cycle) and set().union(*cycle[:3]) == labels
    assert cycle[3] == cycle[0]  # the fourth batch begins the turn again
    # the draws replayed from the seed alone, as the check drew them
    drawn = phase_draws(training_task(run_dir).sources, 4, 3, 4, options)
    assert drawn.sources == record.sources and len(drawn.cycle) == 4
    assert [{int(s.removeprefix("digit_"))} for s in drawn.cycle_sources] == cycle
    assert record.cost["anchored-cycle"] == record.cost["anchored"]
    assert record.predicted["anchored-cycle"] != record.predicted["anchored"]


def test_a_finished_check_gains_the_methods_it_lacks(run_dir, whole, tmp_path, monkeypatch):
    """``from_check``: an earlier version's finished check (here one without the cycle
    anchor) is kept, pair for pair, and only the method it lacks is computed, after its first
    pair is trained again and reproduces; a changed check or other settings are refused, and
    the earlier check is left as it was."""
    full = json.loads((whole / "phase_check.json").read_text())
    earlier = json.loads(json.dumps(full))
    for record in earlier["tournaments"]:
        for part in ("predicted", "seconds", "cost"):
            del record[part]["anchored-cycle"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "phase_check.json").write_text(json.dumps(earlier))
    runs = []
    counting = tournament_module.values_along_steps
    monkeypatch.setattr(
        tournament_module,
        "values_along_steps",
        lambda *a, **k: runs.append(1) or counting(*a, **k),
    )

    def refused(*args, **kwargs):
        raise AssertionError("a method the earlier check has was computed again")

    for name in ("phase_tournaments", "bracket_tournaments", "predict_phase_orders"):
        monkeypatch.setattr(tournament_module, name, refused)
    options = PhaseCheckOptions(**TINY, out_dir=str(tmp_path / "new"), from_check=str(old))
    extended = read_phase_check_file(phase_check(run_dir, options, False).parent)
    assert len(runs) == 2 * 2 * 2  # the first and last pairs of each tournament, both ways
    for got, want in zip(extended.tournaments, full["tournaments"], strict=True):
        assert got.real == want["real"] and got.floor == want["floor"]
        assert got.predicted == want["predicted"]  # the earlier methods kept, the new one alike
        kept = {m: v for m, v in got.seconds.items() if m != "anchored-cycle"}
        assert kept == {m: v for m, v in want["seconds"].items() if m != "anchored-cycle"}
        assert got.cost == want["cost"]
    assert json.loads((old / "phase_check.json").read_text()) == earlier
    moved = json.loads(json.dumps(earlier))
    moved["tournaments"][0]["real"]["held-out loss"][0][1] += 1e-3
    (old / "phase_check.json").write_text(json.dumps(moved))
    again = dataclasses.replace(options, out_dir=str(tmp_path / "again"))
    with pytest.raises(InputError, match="trained again, moves held-out loss"):
        phase_check(run_dir, again, progress=False)
    other = dataclasses.replace(options, out_dir=str(tmp_path / "other"), seed=1)
    with pytest.raises(InputError, match="--seed 0 there, 1 here"):
        phase_check(run_dir, other, progress=False)
    moved["finished"] = False
    (old / "phase_check.json").write_text(json.dumps(moved))
    with pytest.raises(InputError, match="unfinished phase check: finish it first"):
        phase_check(run_dir, again, progress=False)
