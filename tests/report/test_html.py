"""The HTML report: self-contained, escaped, and its numbers equal direct numpy computations."""

import html
import json
import re

import numpy as np
import pytest
from cases import EVIL_NAMES as EVIL
from cases import write_synthetic_results
from safetensors.numpy import save_file

from perturbative.report import load_report_data, write_report
from perturbative.report.html import fill_template
from perturbative.report.statistics import (
    attribute_comovement,
    layer_rms_table,
    ranking_table,
    top_attribute_pairs,
)


def _data_json(text: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S
    )
    return json.loads(match.group(1))


def test_html_is_self_contained(synthetic):
    _, path = synthetic
    text = path.read_text(encoding="utf-8")
    assert path.name == "report.html" and text.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and not re.search(r"<script[^>]*\ssrc=", text)
    assert text.count('src="data:image/png;base64,') >= 4  # the embedded plots
    assert len(text) < 2_000_000


def test_attribute_names_and_paths_are_escaped(synthetic):
    _, path = synthetic
    text = path.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in text
    assert text.count("<script") == 2 and text.count("</script>") == 2  # only the report's own
    assert html.escape(EVIL[2]) in text and html.escape(EVIL[3]) in text  # co-movement table
    assert html.escape('run<b>&"x') in text and 'run<b>&"x' not in text
    assert _data_json(text)["names"] == EVIL  # the JSON still holds the exact names


def test_embedded_values_are_the_results_to_four_digits(synthetic):
    written, path = synthetic
    payload = _data_json(path.read_text(encoding="utf-8"))
    steps = sorted(written["steps"])
    assert payload["steps"] == steps
    for n, step in enumerate(steps):
        shift = written["steps"][step]["output_shift"].astype(np.float64).ravel()
        got = np.array(payload["shift"][n]["v"]) * payload["shift"][n]["m"]
        np.testing.assert_allclose(got, shift, rtol=5e-4, atol=0)
        assert 1 <= np.abs(payload["shift"][n]["v"]).max() < 10


def test_run_directory_grey_thumbnails_and_no_metrics(tmp_path):
    written = write_synthetic_results(tmp_path / "run", metrics=False, steps=(5,))
    save_file(
        {"images": np.zeros((4, 1, 6, 6), np.float32)}, written["dir"] / "thumbnails.safetensors"
    )
    path = write_report(tmp_path / "run", tmp_path / "out" / "r.html")  # the run dir works too
    payload = _data_json(path.read_text(encoding="utf-8"))
    assert len(payload["thumbs"]) == 4 and "Training</h2>" not in path.read_text()


def test_metrics_are_plotted_and_partial_lines_skipped(tmp_path):
    written = write_synthetic_results(tmp_path / "run", thumbnails=False)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 999, "train_lo')  # a line still being written
    data = load_report_data(written["dir"])
    assert data.metrics is not None and max(r["step"] for r in data.metrics) == 300
    text = write_report(written["dir"]).read_text()
    assert "<h2>Training</h2>" in text and _data_json(text)["thumbs"] == []


def test_reads_what_the_sweep_writes(tmp_path):
    torch = pytest.importorskip("torch")
    from perturbative.pipeline import SweepData, SweepSettings, bracket_sweep

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    states = {}
    for step in (0, 10):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        states[step] = {k: v.clone() for k, v in model.state_dict().items()}
    data = SweepData(
        test_inputs=torch.randn(6, 4),
        test_targets=(torch.rand(6, 3) > 0.5).float(),
        attribute_names=["a<1>", "b", "c"],
        thumbnails=torch.rand(3, 1, 2, 2),
    )
    out = bracket_sweep(
        model,
        lambda o, t: torch.nn.functional.binary_cross_entropy_with_logits(o, t),
        [(s, (lambda s=s: states[s])) for s in states],
        data,
        tmp_path / "run" / "brackets",
        SweepSettings(lr=0.1, bracket_examples=3),
        progress=False,
    )
    text = write_report(out).read_text()
    payload = _data_json(text)
    assert payload["steps"] == [0, 10] and payload["names"] == ["a<1>", "b", "c"]
    assert len(payload["thumbs"]) == 3 and "a&lt;1&gt;" in text
    assert len(layer_rms_table(load_report_data(out))) == 4  # two weights, two biases


def test_full_size_report_stays_a_few_megabytes(tmp_path):
    """20 checkpoints x 15 pairs x 32 test examples x 40 attributes, at 4 significant digits."""
    written = write_synthetic_results(
        tmp_path / "run",
        steps=tuple(range(0, 2000, 100)),
        bracket_examples=6,
        test_examples=32,
        attribute_names=[f"attribute_{k}" for k in range(40)],
    )
    size = write_report(written["dir"]).stat().st_size
    assert size < 4_000_000


def test_a_single_output_has_no_attribute_pairs(tmp_path):
    written = write_synthetic_results(tmp_path / "run", attribute_names=["only"], steps=(0, 1))
    text = write_report(written["dir"]).read_text()
    assert (
        top_attribute_pairs(attribute_comovement(load_report_data(written["dir"]).output_shift))
        == []
    )
    # nothing co-moves with one output: the summary box and the section are left out
    assert "strongest co-moving" not in text and "Which attributes move together" not in text


def test_order_sensitivity_table_lists_the_recorded_ranking(tmp_path):
    from cases import write_synthetic_results

    results = tmp_path / "brackets"
    write_synthetic_results(results)
    data = load_report_data(results)
    rows = ranking_table(data)
    assert [r["step"] for r in rows] == data.steps.tolist()
    first = rows[0]["top"][0]
    assert first[0] == int(data.ranking_indices[0, 0])
    assert abs(first[1] - data.ranking_scores[0, 0]) < 1e-6
    assert rows[0]["kept"] is None and all(r["kept"] is not None for r in rows[1:])
    page = write_report(results).read_text()
    assert "Order sensitivity of training examples" in page
    assert f"<td>#{first[0]}<br>" in page


def test_a_misspelled_or_unused_placeholder_is_an_error():
    assert fill_template("<b>%%NAME%%</b>", {"NAME": "%%NAME%%"}) == "<b>%%NAME%%</b>"
    with pytest.raises(KeyError, match="without a value \\['NAEM'\\]"):
        fill_template("<b>%%NAEM%%</b>", {"NAME": "x"})
    with pytest.raises(KeyError, match="without a placeholder \\['EXTRA'\\]"):
        fill_template("<b>%%NAME%%</b>", {"NAME": "x", "EXTRA": "y"})


def test_order_check_section_shows_predictions_against_real_training(tmp_path):
    from cases import write_synthetic_order_check

    written = write_synthetic_results(tmp_path / "run")
    write_synthetic_order_check(tmp_path / "run")
    text = write_report(written["dir"]).read_text()
    assert "Order predictions against real reordered training" in text
    for name in ("order_scatter", "order_horizon", "order_lr"):
        assert f'alt="{name}" src="data:image/png;base64,' in text
    data = load_report_data(written["dir"])
    assert data.order_check.checkpoints[0].step == 100
    assert text.count("<tr><td>100</td><td>x1</td><td>example</td>") == 3  # h = 0, 1, 5
    assert "<th>2nd order</th>" in text and "<th>2nd order: best is real best</th>" in text
    # the synthetic third-order term is a tenth of the prediction: every h = 0 pair is settled
    h0 = data.order_check.checkpoints[0].scales[0].summary.rows("example")[0]
    assert "<th>settled (n)</th>" in text and h0.settled_pairs == h0.pairs == 20


def test_order_check_plots_with_a_single_point_per_line_are_left_out(tmp_path):
    """One horizon and one lr: the horizon and lr plots would be empty frames."""
    import json

    from cases import write_synthetic_order_check

    written = write_synthetic_results(tmp_path / "run")
    path = write_synthetic_order_check(tmp_path / "run")
    path = path if path.suffix == ".json" else path / "order_check.json"
    check = json.loads(path.read_text())
    for entry in check["checkpoints"]:
        entry["scales"] = [s for s in entry["scales"] if s["scale"] == 1.0]
        for scale in entry["scales"]:
            scale["summary"]["all"] = [r for r in scale["summary"]["all"] if r["horizon"] == 0]
    path.write_text(json.dumps(check))
    text = write_report(written["dir"]).read_text()
    assert 'alt="order_scatter"' in text
    assert 'alt="order_horizon"' not in text and 'alt="order_lr"' not in text


def test_per_tensor_rms_is_a_chart_with_the_values_folded_away(tmp_path):
    written = write_synthetic_results(tmp_path / "run")
    text = write_report(written["dir"]).read_text()
    assert 'alt="per-tensor RMS" src="data:image/png;base64,' in text
    assert "<details><summary>every tensor's values" in text and 'id="rms-table"' in text


def test_phase_check_section_shows_accuracy_against_k_and_predicted_against_real(tmp_path):
    from perturbative.pipeline.phase_records import (
        PhaseCheckRecord,
        TournamentRecord,
        TripleRecord,
    )
    from perturbative.pipeline.phase_summary import summarize
    from perturbative.pipeline.results import PHASE_CHECK

    written = write_synthetic_results(tmp_path / "run")
    rng = np.random.default_rng(0)
    records = []
    for k in (1, 5):
        real = rng.normal(size=(3, 3)) * 0.01
        real = real - real.T
        noisy = real + rng.normal(size=(3, 3)) * 0.002 * k
        records.append(
            TournamentRecord(
                step=100,
                k=k,
                lr=0.005,
                sources=["a", "b", "c"],
                real={"held-out loss": real.tolist()},
                floor={"held-out loss": 1e-15},
                predicted={
                    "composition": {"held-out loss": (noisy - noisy.T).tolist()},
                    "coin": {"held-out loss": np.sign(real).tolist()},
                },
                seconds={"real": 1.0, "composition": 0.5},
                triples=[TripleRecord([0, 1, 2], [[0, 1, 2]] * 6, {"held-out loss": [0.0] * 6})]
                if k == 1
                else [],
            )
        )
    check = PhaseCheckRecord(
        run="run", finished=True, options={}, targets=["held-out loss"], tournaments=records
    )
    check.summary = summarize(records)
    (tmp_path / "run" / "phase_check").mkdir()
    (tmp_path / "run" / "phase_check" / PHASE_CHECK).write_text(json.dumps(check.to_json()))
    text = write_report(written["dir"]).read_text()
    assert "Which data first? The order of training phases" in text
    for name in ("phase_accuracy", "phase_scatter"):
        assert f'alt="{name}" src="data:image/png;base64,' in text
    assert "<tr><td>1</td><td>3 of 3</td>" in text and "<tr><td>5</td><td>3 of 3</td>" in text
    assert "best of 3!" in text and "<td>not run</td>" not in text


def test_the_report_is_worded_for_its_own_run_and_names_it(tmp_path):
    written = write_synthetic_results(tmp_path / "my_bert_run")
    text = write_report(written["dir"]).read_text(encoding="utf-8")
    assert "<h1>Bracket report: my_bert_run (synthetic)</h1>" in text
    assert "CelebA" not in text and "Black_Hair" not in text
    assert "Which outputs move together" in text and "attributes" not in text.split("<h2>")[0]
    meta = json.loads((written["dir"] / "meta.json").read_text())
    meta.update(dataset="celeba", step_lr={"0": 0.001, "100": 0.004})
    (written["dir"] / "meta.json").write_text(json.dumps(meta))
    text = write_report(written["dir"]).read_text(encoding="utf-8")
    assert "Which attributes move together" in text and "Black_Hair / Brown_Hair" in text
    assert "lr 0.001–0.004 (each checkpoint's shifts at its own)" in text


def test_a_check_run_past_a_failed_replay_gate_says_so_first(tmp_path):
    written = write_synthetic_results(tmp_path / "run")
    check = tmp_path / "run" / "order_check" / "recorded.json"
    check.parent.mkdir()
    gap = dict(step=100, start=100, end=200, steps=100, gap=0.02, floor=4e-7, tolerance=4e-6)
    gap.update(passed=False, causes=["gradient clipping not given"])
    saved = {"version": 2, "optimizer": "AdamW", "options": {}, "replay": [gap]}
    check.write_text(json.dumps({**saved, "summary": {"pairs": 0}}))
    text = write_report(written["dir"]).read_text(encoding="utf-8")
    warning = text.index('<p class="warning">')
    assert warning < text.index("<h2>") and "2.00e-02 of the movement at step 100" in text
    assert "gradient clipping not given" in text
