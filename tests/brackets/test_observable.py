"""``Observable`` (brackets/_observable.py): the observable's value and gradient, mean losses of
tuple and keyword data."""

import pytest
import torch
from cases import (
    mlp_bce,
)

from perturbative.brackets import (
    Observable,
    mean_gradient,
)


def test_observable_mean_loss_value_and_gradient():
    case = mlp_bce()
    held_out = case.minibatches()[1]
    observable = Observable.mean_loss(case.loss_fn, held_out)
    direct = torch.stack(
        [case.loss_fn(case.model(held_out[0][i : i + 1]), held_out[1][i : i + 1]) for i in range(3)]
    ).mean()
    assert observable.value(case.model) == pytest.approx(direct.item(), rel=1e-14)
    expected = mean_gradient(case.model, case.loss_fn, case.params, held_out)
    got = observable.gradient(case.model, case.params)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k])


def test_mean_loss_of_a_keyword_batch_is_the_mean_of_its_examples_losses():
    """The GPT-2 loss reads sequence 0 of its outputs: the observable must still average all."""
    from cases import hf_gpt2

    case = hf_gpt2()
    observable = Observable.mean_loss(case.loss_fn, case.data)
    each = [Observable.mean_loss(case.loss_fn, case.example(i)).value(case.model) for i in range(5)]
    assert observable.value(case.model) == pytest.approx(sum(each) / 5, rel=1e-12)
    assert observable.value(case.model) != pytest.approx(each[0], rel=1e-3)


def test_mean_loss_of_tuple_data_with_a_model_output_reads_each_examples_row():
    """A Hugging Face classifier on a tensor of ids returns a ``ModelOutput``; slicing it gives a
    tuple, so the mean loss splits its rows into outputs of the same kind instead."""
    from cases import hf_bert

    model = hf_bert().model
    ids, labels = torch.randint(0, 40, (4, 6)), torch.tensor([0, 2, 1, 1])

    def loss(outputs, target):
        return torch.nn.functional.cross_entropy(outputs.logits, target)

    observable = Observable.mean_loss(loss, (ids, labels))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(ids).logits, labels)
    assert observable.value(model) == pytest.approx(float(expected), rel=1e-12)
