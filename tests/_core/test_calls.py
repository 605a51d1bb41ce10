"""A module and a loss bound into pure functions of the parameters."""

import pytest
import torch
from cases import CASES

from perturbative._core import calls
from perturbative._core.calls import batch_loss, example_loss, fixed_state, grad_or_zero, stack


def test_example_and_batch_losses_are_the_per_example_terms_and_their_mean():
    case = CASES["mlp_bce"]()
    state = fixed_state(case.model, case.params)
    per_example = example_loss(case.model, case.loss_fn, state)
    values = [per_example(case.params, *(t[i] for t in case.data)) for i in range(6)]
    for i, value in enumerate(values):
        direct = case.loss_fn(case.model(case.data[0][i : i + 1]), case.data[1][i : i + 1])
        torch.testing.assert_close(value, direct)
    mean = batch_loss(case.model, case.loss_fn, state)(case.params, *case.data)
    torch.testing.assert_close(mean, torch.stack(values).mean())


def test_parameters_left_out_of_params_are_held_fixed():
    case = CASES["linear_mse"]()
    params = {"weight": case.params["weight"]}
    state = fixed_state(case.model, params)
    assert set(state) == {"bias"} and not state["bias"].requires_grad


def test_an_unused_parameter_gets_a_zero_gradient():
    used, unused = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    grads = grad_or_zero([(used * 2).sum()], [used, unused])
    assert torch.equal(grads[0], torch.full((2,), 2.0)) and torch.equal(grads[1], torch.zeros(3))
    assert torch.equal(grad_or_zero([torch.tensor(1.0)], [used])[0], torch.zeros(2))


def test_stack_gives_a_leading_dimension():
    stacked = stack([{"w": torch.zeros(2)}, {"w": torch.ones(2)}])
    assert stacked["w"].shape == (2, 2) and stacked["w"][1].sum() == 2


def test_keyword_batches_are_evaluated_in_one_call_equal_to_one_by_one():
    """A Hugging Face model's keyword batch: one forward pass, split by rows, equals the loop
    over examples; a loss that reads a batch-wide field (``outputs.loss``) falls back to it."""
    from cases import hf_gpt2

    case = hf_gpt2()
    params = case.params
    state = calls.fixed_state(case.model, params)
    n = calls.num_examples((case.data,))
    one = calls.example_loss(case.model, case.loss_fn, state)
    looped = torch.stack([one(params, *calls.take_all((case.data,), i)) for i in range(n)]).mean()
    batched = calls.batch_loss(case.model, case.loss_fn, state)(params, case.data)
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=0)

    def own_loss(outputs, batch):  # the model's batch-wide mean: cannot be split by rows
        return outputs.loss

    one = calls.example_loss(case.model, own_loss, state)
    looped = torch.stack([one(params, *calls.take_all((case.data,), i)) for i in range(n)]).mean()
    got = calls.batch_loss(case.model, own_loss, state)(params, case.data)
    torch.testing.assert_close(got, looped, rtol=1e-6, atol=0)


def test_split_outputs_keeps_the_container_and_drops_batch_wide_fields():
    outputs = {"logits": torch.zeros(3, 2), "loss": torch.tensor(1.0)}
    rows = calls.split_outputs(outputs, 3)
    assert len(rows) == 3 and rows[1]["logits"].shape == (1, 2) and "loss" not in rows[1]
    assert calls.split_outputs(torch.zeros(2, 4), 3) is None
    assert calls.split_outputs((torch.zeros(3), None), 3)[2][0].shape == (1,)


def test_a_float32_model_with_float64_data_says_what_to_do():
    model = torch.nn.Linear(3, 1)
    params = dict(model.named_parameters())
    with pytest.raises(TypeError, match=r"float64 but the model's parameters are torch.float32"):
        calls.call_model(model, params, {}, torch.zeros(2, 3, dtype=torch.float64))


def test_the_keyword_batch_benchmark_runs(tmp_path, capsys):
    pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install -e '.[hf]')"
    )
    from cases import run_benchmark

    out = tmp_path / "keyword_batches.json"
    run_benchmark(
        "keyword_batches.py", "--batch", "4", "--length", "6", "--repeats", "1", "--out", str(out)
    )
    assert "values agree" in capsys.readouterr().out and out.is_file()
