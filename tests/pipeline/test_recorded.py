"""``pipeline/recorded.py``: a recorded run opened for analysis, and its order predictions
checked against really reordering it."""

import pytest
import torch
from recorded_task import record

import perturbative as pt
from perturbative._core.errors import InputError
from perturbative.pipeline.recorded import RecordedCheckOptions, check_recorded_run, summary


def test_order_predictions_on_a_recorded_run_match_really_reordering_it(tmp_path):
    run = tmp_path / "run"
    record(run, steps=40, clip=0.5)  # clipping active on most batches, and modelled
    check = check_recorded_run(run, options=RecordedCheckOptions(checkpoints=2, pairs=6))
    numbers = summary(check)
    assert numbers.pairs == 12 and numbers.all.clipped >= 6
    assert numbers.all.sign_accuracy == 1.0 and numbers.all.median_relative_error < 0.05, numbers
    assert (run / "order_check" / "recorded.json").is_file()


def test_bad_runs_and_tasks_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match="holds no run: neither a run of"):
        check_recorded_run(tmp_path)
    run = tmp_path / "run"
    record(run, steps=12, task="no_such_module:task")
    with pytest.raises(InputError, match="cannot import the task's module 'no_such_module'"):
        check_recorded_run(run)
    with pytest.raises(InputError, match="has no attribute 'nothing'"):
        check_recorded_run(run, task="recorded_task:nothing")
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
    check = ["--checkpoints", "1", "--batch-pairs", "3", "--windows", "1", "--threads", "1"]
    check += ["--scored-examples", "4"]
    assert main(["order-check", str(run), *check]) == 0
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Order predictions against really reordering this run" in page and "AdamW" in page
    assert "Order scores with the run's AdamW" in page


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


def test_an_interrupted_recorded_check_resumes_where_it_stopped(tmp_path, monkeypatch):
    import perturbative.pipeline.recorded as recorded

    run = tmp_path / "run"
    record(run, steps=20)
    options = RecordedCheckOptions(steps=(10,), pairs=4, windows=1)
    whole = check_recorded_run(run, options=options, out_dir=tmp_path / "whole")
    calls, pair = [], recorded._pair

    def stops_at_the_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return pair(*args)

    monkeypatch.setattr(recorded, "_pair", stops_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        check_recorded_run(run, options=options, out_dir=tmp_path / "cut")
    assert (tmp_path / "cut" / "recorded.progress.jsonl").is_file()
    calls.clear()
    resumed = check_recorded_run(run, options=options, out_dir=tmp_path / "cut")
    assert len(calls) == 2  # only the two pairs it had not finished
    assert [p.real for p in resumed.pairs] == [p.real for p in whole.pairs]
    assert resumed.windows == whole.windows
    assert not (tmp_path / "cut" / "recorded.progress.jsonl").exists()
    with pytest.raises(InputError, match="already holds a finished recorded order check"):
        check_recorded_run(run, options=options, out_dir=tmp_path / "cut")
    with pytest.raises(InputError, match="unfinished recorded order check with other settings"):
        (tmp_path / "cut" / "recorded.progress.jsonl").write_text(
            '{"options": {"pairs": 9}, "checkpoints": {}}\n'
        )
        check_recorded_run(run, options=options, out_dir=tmp_path / "cut")
