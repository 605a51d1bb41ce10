"""A recorded run (``pipeline/run_sweep.py`` sweeps it) checked by the one order check:
its predictions against really reordering it."""

import pytest
import torch
from recorded_task import record

import perturbative as pt
from perturbative._core.errors import InputError
from perturbative.pipeline.config import OrderCheckOptions
from perturbative.pipeline.order_check import order_check
from perturbative.pipeline.order_summary import summary_lines
from perturbative.pipeline.results import read_order_check_file

#: the run's own batches and scored examples only, at its own lr
LOGGED = dict(example_pairs=0, batch_pairs=0, exchanges=0, windows=0, horizons=(0,))
LOGGED |= dict(lr_scales=(1.0,), floor_pairs=0)


def checked(run, out=None, **options):
    """The order check of a recorded run, read back as typed records."""
    options = OrderCheckOptions(**{**LOGGED, **options}, out_dir=out and str(out))
    return read_order_check_file(order_check(run, options, progress=False).parent)


def test_order_predictions_on_a_recorded_run_match_really_reordering_it(tmp_path):
    run = tmp_path / "run"
    record(run, steps=40, clip=0.5)  # clipping active on most batches, and modelled
    check = checked(run, checkpoints=2, logged_pairs=6)
    rows = [entry.scales[0].summary.rows("logged")[0] for entry in check.checkpoints]
    assert [r.pairs for r in rows] == [6, 6] and sum(r.clipped for r in rows) >= 6
    assert all(r.accuracy == 1.0 and r.relative_error < 0.05 for r in rows), rows
    pairs = check.checkpoints[0].scales[0].pairs
    assert pairs[0].batches == [check.checkpoints[0].step + 1, check.checkpoints[0].step + 2]


def test_a_float32_check_measures_its_floor_against_float64_and_what_it_cost(tmp_path):
    run = tmp_path / "run"
    record(run, steps=20)
    options = dict(steps=(10,), logged_pairs=3, floor_pairs=2, scored_examples=2)
    low = checked(run, tmp_path / "float32", dtype="float32", **options)
    high = checked(run, tmp_path / "float64", dtype="float64", **options)
    cpu = checked(run, tmp_path / "cpu", dtype="float32", device="cpu", **options)
    (entry,), (scale,) = low.checkpoints, low.checkpoints[0].scales
    # the floor of the logged pairs: their float32 differences against an independent
    # float64 check of the same pairs, 90th percentile over the first two
    assert scale.floor["pairs"] == 2 and scale.floor["kind"] == "logged"
    exact = [p.real[0] for p in high.checkpoints[0].scales[0].pairs[:2]]
    gaps = [abs(p.real[0] - e) for p, e in zip(scale.pairs, exact, strict=False)]
    expected = min(gaps) + 0.9 * (max(gaps) - min(gaps))
    assert scale.floor["float32"][0] == pytest.approx(expected, rel=1e-6, abs=1e-15)
    assert 0 < scale.floor["float32"][0] < 1e-3 * max(abs(e) for e in exact)
    # the CPU named explicitly gives the default's numbers (the run trained on the CPU)
    same = cpu.checkpoints[0].scales[0]
    assert [p.real for p in same.pairs] == [p.real for p in scale.pairs]
    assert [p.predicted for p in same.pairs] == [p.predicted for p in scale.pairs]
    assert [s.predicted for s in same.scores] == [s.predicted for s in scale.scores]
    # what each pair, each score and the checkpoint cost, kept and printed
    assert entry.seconds > 0 and entry.peak_memory_gib > 0
    assert all(len(p.seconds) == 2 and min(p.seconds) > 0 for p in scale.pairs)
    assert all(len(s.seconds) == 2 for s in scale.scores)
    lines = summary_lines(low)
    assert any("float32 rounding floor" in line and "2 logged pairs" in line for line in lines)
    assert any("peak memory" in line and "s predicted" in line for line in lines)


def test_bad_runs_and_tasks_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match="holds no run: neither a run of"):
        order_check(tmp_path)
    run = tmp_path / "run"
    record(run, steps=12, task="no_such_module:task")
    with pytest.raises(InputError, match="cannot import the task's module 'no_such_module'"):
        order_check(run)
    with pytest.raises(InputError, match="has no attribute 'nothing'"):
        order_check(run, task="recorded_task:nothing")
    with pytest.raises(InputError, match="outside the task's train set"):
        pt.Task(model=lambda: None, loss_fn=None, train=[0, 1]).batch([5])


def test_a_recorded_run_is_swept_and_reported_with_class_targets_in_their_cells(tmp_path):
    from perturbative.cli import main
    from perturbative.pipeline import load_results

    run = tmp_path / "run"
    record(run, steps=20)
    flags = ["--ranking-examples", "8", "--test-examples", "8", "--threads", "1"]
    assert main(["brackets", str(run), *flags]) == 0
    meta, steps = load_results(run / "brackets")
    assert sorted(steps) == [0, 10, 20] and meta["attribute_names"] == [
        "output_0",
        "output_1",
        "output_2",
    ]
    # ranked with the run's AdamW over its next 4 logged batches; the last checkpoint has none
    assert "AdamW" in meta["ranking_model"] and "ranking_indices" in steps[10]
    assert "ranking_indices" not in steps[20]
    # each checkpoint's shifts at the lr the run took right after it (its LambdaLR decays)
    from perturbative.pipeline.recorder import read_order_log

    log = {r["step"]: r["lr"][0] for r in read_order_log(run)}
    assert meta["step_lr"] == {"0": log[1], "10": log[11], "20": log[20]}
    assert meta["step_lr"]["0"] > meta["step_lr"]["10"] > meta["step_lr"]["20"]
    targets = steps[20]["targets"]
    from recorded_task import TARGETS

    assert targets.shape == (8, 3) and torch.equal(targets.sum(1), torch.ones(8))
    assert set(targets.argmax(1).tolist()) <= set(TARGETS[160:].tolist())
    assert (
        main(
            [
                "brackets",
                str(run),
                *flags,
                "--preconditioner",
                "adam",
                "--out",
                str(tmp_path / "adam"),
            ]
        )
        == 0
    )
    check = ["--checkpoints", "1", "--logged-pairs", "3", "--example-pairs", "2"]
    check += ["--batch-pairs", "1", "--exchanges", "0", "--windows", "1", "--window-sizes", "3"]
    check += ["--horizons", "0", "--lr-scales", "1", "--floor-pairs", "0", "--threads", "1"]
    check += ["--scored-examples", "4"]
    assert main(["order-check", str(run), *check]) == 0
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Order predictions against real reordered training" in page
    assert "<td>logged</td>" in page and "<th>scored examples</th>" in page


def test_a_language_model_run_of_keyword_batches_is_swept_and_shown_as_text(tmp_path):
    from recorded_task import record_keyword

    from perturbative.cli import main
    from perturbative.pipeline import load_results

    run = tmp_path / "run"
    record_keyword(run)
    flags = ["--ranking-examples", "6", "--test-examples", "8", "--threads", "1"]
    assert main(["brackets", str(run), *flags]) == 0
    meta, steps = load_results(run / "brackets")
    assert sorted(steps) == [0, 6, 12] and meta["attribute_names"][:2] == ["token 0", "token 1"]
    assert len(meta["texts"]) == 8 and len(meta["texts"][0]) == 9
    assert [len(t) for t in meta["tokens"]] == [8] * 8
    assert meta["tokens"][0] == list(meta["texts"][0][1:])
    assert "AdamW" in meta["ranking_model"]
    at = steps[6]
    pairs = len(meta["pairs"])
    assert at["output_shift"].shape == (pairs, 8, 8) and at["loss_shift"].shape == (pairs, 8)
    assert "targets" not in at  # a keyword batch carries its own
    # the loss is the mean negative log-probability of the 8 target tokens, and so are shifts
    torch.testing.assert_close(-at["output_shift"].mean(-1), at["loss_shift"], rtol=1e-3, atol=1e-9)
    torch.testing.assert_close(-at["outputs"].mean(-1), at["losses"], rtol=1e-5, atol=1e-6)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert 'id="textview"' in page and meta["texts"][0] in page


def test_image_examples_of_a_recorded_run_are_shown_as_thumbnails(tmp_path):
    from recorded_task import image_task

    from perturbative.cli import main
    from perturbative.pipeline import Recorder
    from perturbative.pipeline.results import load_thumbnails

    run = tmp_path / "run"
    net = image_task.model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    recorder = Recorder(run, net, opt, task="recorded_task:image_task", save_at=5)
    for step in range(10):
        indices = list(range(6 * step % 60, 6 * step % 60 + 6))
        inputs, classes = image_task.batch(indices)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), classes).backward()
        opt.step()
        recorder.step(indices)
    recorder.close()
    flags = ["--ranking-examples", "4", "--test-examples", "8", "--threads", "1"]
    assert main(["brackets", str(run), *flags]) == 0
    thumbnails = load_thumbnails(run / "brackets")
    assert thumbnails.shape == (6, 1, 4, 4) and thumbnails.min() == 0 and thumbnails.max() == 1
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").read_text().count("data:image/png;base64,") >= 6


def test_a_classifier_of_keyword_batches_draws_its_labels_in_their_class_cells(tmp_path):
    from recorded_task import SEQUENCES, record_keyword

    from perturbative.cli import main
    from perturbative.pipeline import load_results

    run = tmp_path / "run"
    record_keyword(run, "bert_task", steps=6, save_at=3)
    flags = ["--ranking-examples", "4", "--test-examples", "8", "--threads", "1"]
    assert main(["brackets", str(run), *flags]) == 0
    meta, steps = load_results(run / "brackets")
    labels = torch.stack([SEQUENCES[64 + i]["labels"] for i in steps[3]["test_indices"]])
    assert torch.equal(steps[3]["targets"].argmax(1), labels)
    assert steps[3]["targets"].sum() == 8 and meta["attribute_names"] == [
        "output_0",
        "output_1",
        "output_2",
    ]


def test_an_interrupted_check_of_a_recorded_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Its logged pairs and scores are saved as they finish: a rerun computes only the rest
    and gives the numbers of an unbroken check."""
    import perturbative.pipeline.order_check as module

    run = tmp_path / "run"
    record(run, steps=20)
    options = dict(steps=(10,), logged_pairs=4, scored_examples=2)
    whole = checked(run, tmp_path / "whole", **options)
    calls, pair = [], module.pair_record

    def stops_at_the_third(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return pair(*args, **kwargs)

    monkeypatch.setattr(module, "pair_record", stops_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        checked(run, tmp_path / "cut", **options)
    assert (tmp_path / "cut" / module.PROGRESS).is_file()
    calls.clear()
    resumed = checked(run, tmp_path / "cut", **options)
    assert len(calls) == 2  # only the two pairs it had not finished
    assert resumed.checkpoints[0].scales[0].pairs == whole.checkpoints[0].scales[0].pairs
    assert resumed.checkpoints[0].scales[0].scores == whole.checkpoints[0].scales[0].scores
    assert not (tmp_path / "cut" / module.PROGRESS).exists()
    with pytest.raises(InputError, match="already holds a finished order check"):
        checked(run, tmp_path / "cut", **options)


def test_how_batchnorm_is_met_is_refused_on_a_run_without_it(tmp_path):
    """``batchnorm``, ``batchnorm_examples`` and ``examples`` apply only to a run that trained
    BatchNorm on batch statistics: in Python as on the command line, refused by name."""
    run = tmp_path / "run"
    record(run, steps=12)
    options = OrderCheckOptions(batchnorm="running", batchnorm_examples=8, checkpoints=1)
    with pytest.raises(InputError, match="--batchnorm, --batchnorm-examples apply to runs whose"):
        order_check(run, options, progress=False)
    with pytest.raises(InputError, match="--batchnorm applies to runs whose BatchNorm"):
        pt.phase_check(run, pt.PhaseCheckOptions(batchnorm="running"), progress=False)
