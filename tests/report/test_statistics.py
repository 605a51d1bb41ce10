"""The HTML report: self-contained, escaped, and its numbers equal direct numpy computations."""

import json

import numpy as np
import pytest
from cases import EVIL_NAMES as EVIL
from cases import run_benchmark

from perturbative.pipeline.order_records import OrderCheckRecord
from perturbative.report import load_report_data
from perturbative.report.statistics import (
    attribute_comovement,
    bracket_gradient_correlation,
    layer_rms_table,
    pooled_order_checks,
    top_attribute_pairs,
)


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


def test_constant_norms_have_no_correlation():
    flat = bracket_gradient_correlation(np.ones((2, 3)), np.ones((2, 3)), np.array([[0, 1]] * 3))
    assert np.isnan(flat.pearson) and flat.count == 6


def test_order_checks_pool_per_run_and_count_a_pair_drawn_twice_once(tmp_path, capsys):
    def pair(kind, predicted, second_order, real):
        return {"kind": kind, "predicted": predicted, "second_order": second_order,
                "sgd_bracket": 0.0, "state_part": 0.0, "gradient_norms": [1.0, 1.0],
                "horizons": [0, 5], "real": [real, 9.0]}  # fmt: skip

    def check(expansion, pairs, windows, run="r", lr_scale_pairs=(), pieces="follow"):
        scales = [
            {"scale": 1.0, "lr": 1.0, "horizons": [0, 5], "floor": {"float32": [0.5, 0.5]},
             "pairs": pairs, "windows": windows},
            {"scale": 0.1, "lr": 0.1, "horizons": [0], "floor": None,
             "pairs": list(lr_scale_pairs), "windows": []},
        ]  # fmt: skip
        options = {"expansion": expansion} | ({"pieces": pieces} if pieces else {})
        return OrderCheckRecord.from_json({"run": run, "options": options,
                "checkpoints": [{"step": 10, "scales": scales}]})  # fmt: skip

    window = {"k": 3, "best_is_real_best": True, "gap_share": 0.5, "predicted": [1.0, 2.0],
              "real": [1.0, 2.0]}  # fmt: skip
    first = check(
        3,
        [pair("batch", 1.0, 0.9, 2.0), pair("batch", -1.0, 0.5, 1.0), pair("exchange", 1, 1, 0.1)],
        [window],
        lr_scale_pairs=[pair("batch", 1.0, 1.0, -1.0)],  # another lr: not pooled
    )
    again = check(3, [pair("batch", 1.0, 0.9, 2.0), pair("batch", 2.0, 1.9, -3.0)], [window])
    second_order = check(2, [pair("batch", 1.0, 1.0, -1.0)], [])
    other_run = check(3, [pair("batch", 1.0, 0.9, 2.0)], [], run="s")
    # the same pair predicted ignoring pieces, by a check written before the option
    ignored = check(3, [pair("batch", -1.0, -1.0, 2.0)], [], pieces=None)
    pooled = pooled_order_checks([first, again, second_order, other_run, ignored], "follow")
    r = pooled["r"]
    assert (r["checks"], r["skipped"], r["duplicates"], r["steps"]) == (2, 2, 2, [10])
    alone = pooled_order_checks([first, ignored], "ignore")["r"]
    assert (alone["checks"], alone["kinds"]["batch"]["right"]) == (1, 0)
    batch = r["kinds"]["batch"]  # 2.0 (right, settled), 1.0 (wrong), -3.0 (wrong, settled)
    assert (batch["pairs"], batch["right"], batch["settled"]) == (3, 1, 2)
    assert batch["accuracy_settled"] == 0.5 and batch["above_floor"] == 3
    assert batch["standard_error"] == pytest.approx((1 / 3 * 2 / 3 / 3) ** 0.5)
    exchange = r["kinds"]["exchange"]  # below the floor 0.5; third-order term 0: settled
    assert exchange["above_floor"] == 0 and exchange["settled"] == 1
    assert r["windows"] == {3: {"windows": 1, "picked": 1, "gap_share": 0.5}}
    assert pooled["s"]["kinds"]["batch"]["pairs"] == 1

    folders = []
    for n, result in enumerate((first, again)):
        folders.append(tmp_path / f"check{n}")
        folders[-1].mkdir()
        (folders[-1] / "order_check.json").write_text(json.dumps(result.to_json()))
    run_benchmark("order_targets.py", *map(str, folders))
    out = capsys.readouterr().out
    assert "minibatch pairs            1 of 3 = 0.333 +- 0.272 (target 0.98: not met)" in out
    assert "best of 3! picked           1 of 1 = 1.000 (target 0.9: met)" in out


def test_single_examples_pool_apart_by_how_they_were_trained():
    """Single examples trained inside a batch (``--examples in-batch``) and alone in eval mode
    (``alone``, ``--batchnorm running``, or a check made before the option) are other kinds."""

    def check(seed, real, **options):
        pairs = [{"kind": "example", "predicted": 1.0, "second_order": 1.0, "sgd_bracket": 0.0,
                  "state_part": 0.0, "gradient_norms": [1.0, 1.0], "horizons": [0],
                  "real": [real]}]  # fmt: skip
        scale = {"scale": 1.0, "lr": 1.0, "horizons": [0], "floor": None, "pairs": pairs,
                 "windows": []}  # fmt: skip
        options = {"expansion": 3, "seed": seed, **options}
        checkpoints = [{"step": 10, "scales": [scale]}]
        return OrderCheckRecord.from_json(
            {"run": "r", "checkpoints": checkpoints, "options": options}
        )

    kinds = pooled_order_checks(
        [
            check(0, 1.0, batchnorm="batch", examples="in-batch"),
            check(1, -1.0, batchnorm="batch", examples="alone"),
            check(2, -2.0, batchnorm="running", examples="in-batch"),
            check(3, 3.0, batchnorm="batch"),
        ]
    )["r"]["kinds"]
    assert kinds["example_in_batch"]["right"] == kinds["example_in_batch"]["pairs"] == 1
    assert (kinds["example"]["pairs"], kinds["example"]["right"]) == (3, 1)
