"""``Expansion``: one frozen object says how every prediction expands its gradients, and the
defaults are the validated settings (third order, each point's own piece)."""

import dataclasses

import pytest
import torch
from cases import mlp_bce, warm_up

import perturbative as pt
from perturbative.brackets._expansion import as_expansion


def test_defaults_are_the_validated_settings_and_the_object_is_frozen():
    default = pt.Expansion()
    assert (default.order, default.follow_pieces, default.engine) == (3, True, "auto")
    assert default.third_order and not pt.Expansion(order=2).third_order
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.order = 2
    assert as_expansion(2) == pt.Expansion(order=2) and as_expansion(default) is default


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"order": 4}, ValueError),
        ({"engine": "gpu"}, ValueError),
        ({"follow_pieces": 1}, TypeError),
    ],
)
def test_bad_settings_are_refused(bad, error):
    with pytest.raises(error):
        pt.Expansion(**bad)
    with pytest.raises(TypeError, match="Expansion or an order"):
        as_expansion("3")


def test_predictions_default_to_third_order_and_report_the_second_beside_it():
    case = mlp_bce()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-2)
    warm_up(case, optimizer)
    observable = pt.Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    x, y = case.minibatches()[:2]
    default = pt.predict_swap(case.model, case.loss_fn, optimizer, x, y, observable)
    third = pt.predict_swap(case.model, case.loss_fn, optimizer, x, y, observable, expansion=3)
    second = pt.predict_swap(case.model, case.loss_fn, optimizer, x, y, observable, expansion=2)
    assert default.predicted == third.predicted and default.second_order == second.predicted
    assert default.predicted != second.predicted
