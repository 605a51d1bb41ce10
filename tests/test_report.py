"""The HTML report: self-contained, escaped, and its numbers equal direct numpy computations."""

import html
import json
import re

import numpy as np
import pytest
from safetensors.numpy import save_file
from synthetic_results import write_synthetic_results

from perturbative.report import (
    _average_ranks,
    attribute_comovement,
    bracket_gradient_correlation,
    layer_rms_table,
    load_report_data,
    top_attribute_pairs,
    write_report,
)

EVIL = ["Black_Hair", "Brown_Hair", "<script>alert(1)</script>", "</script>", 'a"b&c$x^{$\u2028']


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / 'run<b>&"x'
    written = write_synthetic_results(run, attribute_names=EVIL)
    return written, write_report(written["dir"])


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


def test_norm_correlation_matches_numpy(synthetic):
    written, path = synthetic
    meta, steps = written["meta"], written["steps"]
    x, y = [], []
    for arrays in steps.values():
        for p, (i, j) in enumerate(meta["pairs"]):
            x.append(np.log(float(arrays["grad_norm"][i]) * float(arrays["grad_norm"][j])))
            y.append(np.log(float(arrays["bracket_norm"][p])))
    x, y = np.array(x), np.array(y)
    data = load_report_data(written["dir"])
    fit = bracket_gradient_correlation(data.grad_norm, data.bracket_norm, data.pairs)
    slope, intercept = np.polyfit(x, y, 1)
    ranks = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    assert fit.count == len(x) == len(steps) * len(meta["pairs"])
    assert fit.pearson == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-6)
    assert fit.spearman == pytest.approx(np.corrcoef(*ranks)[0, 1], abs=1e-9)
    assert (fit.slope, fit.intercept) == pytest.approx((slope, intercept), abs=1e-6)
    assert fit.pearson > 0.9  # synthetic brackets are 0.3 |g_i| |g_j| times small noise
    assert f'<span class="num" id="pearson">{fit.pearson:.4g}</span>' in path.read_text()


def test_spearman_ranks_ties_by_their_mean_rank():
    np.testing.assert_array_equal(_average_ranks(np.array([3.0, 1.0, 2.0, 2.0])), [3, 0, 1.5, 1.5])
    flat = bracket_gradient_correlation(np.ones((2, 3)), np.ones((2, 3)), np.array([[0, 1]] * 3))
    assert np.isnan(flat.pearson) and flat.count == 6  # constant norms: no correlation defined


def test_comovement_matches_corrcoef(synthetic):
    written, _ = synthetic
    data = load_report_data(written["dir"])
    corr = attribute_comovement(data.output_shift)
    k = len(EVIL)
    for n, step in enumerate(sorted(written["steps"])):
        shift = written["steps"][step]["output_shift"].astype(np.float64).reshape(-1, k)
        np.testing.assert_allclose(corr[n], np.corrcoef(shift.T), atol=1e-10)
    assert top_attribute_pairs(corr, count=1) == [(0, 1)]  # attribute 1 ~ -attribute 0
    assert (corr[:, 0, 1] < -0.9).all()


def test_comovement_of_a_constant_attribute_is_zero():
    rng = np.random.default_rng(1)
    shift = rng.normal(size=(2, 3, 4, 3))
    shift[..., 2] = 0.5
    corr = attribute_comovement(shift)  # warnings are errors: no 0/0
    np.testing.assert_array_equal(corr[:, 2, :2], 0.0)
    np.testing.assert_array_equal(corr[:, [0, 1, 2], [0, 1, 2]], 1.0)


def test_layer_rms_table_is_rms_over_pairs(synthetic):
    written, path = synthetic
    data = load_report_data(written["dir"])
    rows = layer_rms_table(data)
    first, last = sorted(written["steps"])[0], sorted(written["steps"])[-1]
    for n, row in enumerate(rows):
        pairs = written["steps"][last]["bracket_layer_rms"][:, n].astype(np.float64)
        grads = written["steps"][last]["grad_layer_rms"][:, n].astype(np.float64)
        early = written["steps"][first]["bracket_layer_rms"][:, n].astype(np.float64)
        assert row["bracket_last"] == pytest.approx(np.sqrt(sum(v * v for v in pairs) / len(pairs)))
        assert row["grad_last"] == pytest.approx(np.sqrt(np.mean(grads**2)))
        assert row["bracket_first"] == pytest.approx(np.sqrt(np.mean(early**2)))
        assert row["ratio_last"] == pytest.approx(row["bracket_last"] / row["grad_last"])
        assert row["name"] == written["meta"]["param_names"][n]
        assert f"<tr><td>{row['name']}</td><td>{row['size']}</td>" in path.read_text()


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


def test_missing_results_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `perturbative brackets`"):
        write_report(tmp_path / "nowhere")
    written = write_synthetic_results(tmp_path / "run")
    (written["dir"] / "step_000200.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing; rerun `perturbative brackets`"):
        load_report_data(written["dir"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "meta.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "meta.json").write_text('{"format_version": 1}'), "lacks"),
        (
            lambda d: (d / "meta.json").write_text(
                json.dumps({**json.loads((d / "meta.json").read_text()), "format_version": 9})
            ),
            "format_version 9",
        ),
        (lambda d: (d / "step_000100.safetensors").write_bytes(b"\x00" * 12), "corrupt"),
        (
            lambda d: save_file(
                {"outputs": np.zeros((2, 2), np.float32)}, str(d / "step_000100.safetensors")
            ),
            r"lacks \['output_shift'",
        ),
    ],
)
def test_corrupt_results_say_what_to_do(tmp_path, damage, message):
    written = write_synthetic_results(tmp_path / "run", thumbnails=False, metrics=False)
    damage(written["dir"])
    with pytest.raises(ValueError, match=message) as error:
        load_report_data(written["dir"])
    assert "perturbative" in str(error.value)


def test_empty_sweep_is_refused(tmp_path):
    written = write_synthetic_results(tmp_path / "run", thumbnails=False, metrics=False)
    meta = json.loads((written["dir"] / "meta.json").read_text())
    (written["dir"] / "meta.json").write_text(json.dumps({**meta, "steps": []}))
    with pytest.raises(ValueError, match="no finished checkpoint"):
        write_report(written["dir"])


def test_reads_what_the_sweep_writes(tmp_path):
    torch = pytest.importorskip("torch")
    from perturbative.sweep import SweepData, SweepSettings, bracket_sweep

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
    assert "strongest co-moving attributes:\n <b>n/a</b>" in text


def test_order_sensitivity_table_lists_the_recorded_ranking(tmp_path):
    from synthetic_results import write_synthetic_results

    from perturbative.report import load_report_data, ranking_table, write_report

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
    assert f"#{first[0]} (" in page
