"""The sweep writes the documented results files, consistent with direct computations."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perturbative import InputError
from perturbative.brackets import (
    bracket_matrix,
    mean_gradient,
    output_shift,
    projected_bracket_matrix,
    upper_pairs,
)
from perturbative.pipeline import SweepData, SweepSettings, bracket_sweep, load_results


def _bce(outputs, targets):
    return F.binary_cross_entropy_with_logits(outputs, targets)


def _setup(tmp_path, k=3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, k))
    states = {}
    for step in (0, 10, 20):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        states[step] = {k_: v.clone() for k_, v in model.state_dict().items()}
    data = SweepData(
        test_inputs=torch.randn(7, 4),
        test_targets=(torch.rand(7, k) > 0.5).float(),
        attribute_names=[f"attr<{i}>" for i in range(k)],
        ranking_inputs=torch.randn(9, 4),
        ranking_targets=(torch.rand(9, k) > 0.5).float(),
        ranking_indices=torch.arange(100, 109),
        thumbnails=torch.rand(4, 1, 2, 2),
    )
    checkpoints = [(s, (lambda s=s: states[s])) for s in states]
    return model, states, data, checkpoints


def test_sweep_writes_results_matching_direct_computation(tmp_path):
    model, states, data, checkpoints = _setup(tmp_path)
    settings = SweepSettings(lr=0.05, bracket_examples=4, dataset="toy")
    out = bracket_sweep(model, _bce, checkpoints, data, tmp_path / "b", settings, progress=False)
    meta, steps = load_results(out)
    assert meta["steps"] == [0, 10, 20]
    assert meta["pairs"] == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert meta["attribute_names"] == ["attr<0>", "attr<1>", "attr<2>"]
    r = steps[10]
    assert r["output_shift"].shape == (6, 7, 3)
    assert r["bracket_layer_rms"].shape == (6, 4)
    assert r["ranking_indices"].shape == (9,)
    assert set(r["ranking_indices"].tolist()) == set(range(100, 109))
    scores = r["ranking_scores"]
    assert torch.all(scores.abs()[:-1] >= scores.abs()[1:])
    assert torch.all((r["cancellation"] > 0) & (r["cancellation"] <= 1 + 1e-6))

    model.load_state_dict(states[10])
    params = dict(model.named_parameters())
    pairs = upper_pairs(
        bracket_matrix(model, _bce, params, (data.test_inputs[:4], data.test_targets[:4]))
    )
    expected = output_shift(model, params, pairs, data.test_inputs, lr=0.05)
    torch.testing.assert_close(r["output_shift"], expected, rtol=1e-5, atol=1e-9)
    norms = torch.sqrt(sum(v.pow(2).flatten(1).sum(1) for v in pairs.values()))
    torch.testing.assert_close(r["bracket_norm"], norms, rtol=1e-5, atol=1e-9)
    u = mean_gradient(model, _bce, params, (data.test_inputs, data.test_targets))
    pool = (data.ranking_inputs, data.ranking_targets)
    row_sums = projected_bracket_matrix(model, _bce, params, pool, u).sum(1)
    expected = row_sums[r["ranking_indices"] - 100]
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-7)


def test_sweep_resumes_and_refuses_other_settings(tmp_path):
    model, _, data, checkpoints = _setup(tmp_path)
    settings = SweepSettings(lr=0.05, bracket_examples=3)
    out = tmp_path / "b"
    bracket_sweep(model, _bce, checkpoints[:2], data, out, settings, progress=False)
    first = (out / "step_000000.safetensors").stat().st_mtime_ns
    bracket_sweep(model, _bce, checkpoints, data, out, settings, progress=False)
    assert json.loads((out / "meta.json").read_text())["steps"] == [0, 10, 20]
    assert (out / "step_000000.safetensors").stat().st_mtime_ns == first
    with pytest.raises(FileExistsError, match="other settings"):
        bracket_sweep(model, _bce, checkpoints, data, out, SweepSettings(lr=0.1), progress=False)


def test_sweep_rejects_wrong_attribute_names(tmp_path):
    model, _, data, checkpoints = _setup(tmp_path)
    data.attribute_names = ["only one"]
    with pytest.raises(ValueError, match="attribute names"):
        bracket_sweep(model, _bce, checkpoints, data, tmp_path / "b", SweepSettings(lr=0.1))


def test_adam_settings_need_the_adam_preconditioner_and_vice_versa(tmp_path):
    model, _, data, checkpoints = _setup(tmp_path)
    adam = SweepSettings(lr=0.1, preconditioner="adam")
    with pytest.raises(InputError, match="no preconditioner_at was given"):
        bracket_sweep(model, _bce, checkpoints, data, tmp_path / "a", adam, progress=False)
    with pytest.raises(InputError, match="set preconditioner='adam'"):
        bracket_sweep(
            model,
            _bce,
            checkpoints,
            data,
            tmp_path / "b",
            SweepSettings(lr=0.1),
            preconditioner_at=lambda step, model: None,
            progress=False,
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_integer_class_labels_get_a_message_about_outputs_not_the_batch(tmp_path):
    model, _, data, checkpoints = _setup(tmp_path, k=3)
    data.test_targets = torch.randint(0, 3, (7,))
    data.ranking_inputs = data.ranking_targets = None
    data.attribute_names = [f"class_{i}" for i in range(10)]
    settings = SweepSettings(lr=0.05, bracket_examples=4)

    def cross_entropy(outputs, targets):
        return F.cross_entropy(outputs, targets)

    with pytest.raises(InputError, match=r"10 attribute names for the model's 3 outputs"):
        bracket_sweep(model, cross_entropy, checkpoints, data, tmp_path / "c", settings)


def test_a_model_that_returns_a_model_output_is_swept_as_it_comes(tmp_path):
    """A Hugging Face classifier called on a tensor of token ids returns a ``ModelOutput``: the
    sweep takes its logits, and the parameter names stay the model's own (no wrapper)."""
    from cases import hf_bert

    model = hf_bert().model  # float64, eval mode, 3 classes, a vocabulary of 40
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 40, (6, 5))
    data = SweepData(
        test_inputs=ids,
        test_targets=F.one_hot(torch.randint(0, 3, (6,)), 3).double(),
        attribute_names=["a", "b", "c"],
    )

    def loss(outputs, targets):
        return F.binary_cross_entropy_with_logits(outputs.logits, targets)

    settings = SweepSettings(lr=0.01, bracket_examples=3)
    out = bracket_sweep(
        model, loss, [(0, lambda: state)], data, tmp_path / "hf", settings, progress=False
    )
    meta, steps = load_results(out)
    assert steps[0]["output_shift"].shape == (3, 6, 3)
    assert any(name.startswith("bert.") for name in meta["param_names"])


def test_class_index_targets_reach_the_report_one_hot(tmp_path):
    """Integer labels ``(T,)``: the loss sees them as they are, the report gets each in its
    class's cell (not a flattened grid)."""
    model, _, data, checkpoints = _setup(tmp_path, k=3)
    labels = torch.randint(0, 3, (7,))
    data.test_targets = labels
    data.ranking_targets = torch.randint(0, 3, (9,))
    data.attribute_names = ["class_0", "class_1", "class_2"]

    def cross_entropy(outputs, targets):
        return F.cross_entropy(outputs, targets)

    settings = SweepSettings(lr=0.05, bracket_examples=4)
    out = bracket_sweep(
        model, cross_entropy, checkpoints, data, tmp_path / "c", settings, progress=False
    )
    _, steps = load_results(out)
    torch.testing.assert_close(steps[10]["targets"], F.one_hot(labels, 3).float())
