"""Order effects on an observable: scores against the pairwise matrix, predictions against real
reordered training (SGD, momentum, Adam), residuals shrinking like lr^3, best orders."""

import copy
import itertools
import warnings

import pytest
import torch
from cases import (
    CASES,
    at_lr,
    bce_loss,
    linear_mse,
    mlp_bce,
    pooled_relu_convnet,
    random_preconditioner,
    train_mode_batchnorm_net,
    warm_up,
)

import perturbative as pt
from perturbative.brackets import (
    Expansion,
    Observable,
    best_order,
    exchanged,
    hvp,
    mean_gradient,
    order_scores,
    parameters_after_steps,
    predict_exchange,
    predict_order,
    predict_swap,
    values_along_steps,
    vector_norm,
)
from perturbative.brackets._predictions import expanded_values_along_steps


def real_value(case, optimizer, batches, observable, lr):
    """O after really training on ``batches`` in order (copies of model and optimizer)."""
    trained = parameters_after_steps(case.model, case.loss_fn, at_lr(optimizer, lr), batches)
    model = copy.deepcopy(case.model)
    return observable.value(model, {**dict(model.named_parameters()), **trained})


def warmed(case, make, steps=30):
    optimizer = make(case.model.parameters())
    for i in range(steps):
        optimizer.zero_grad()
        j = i % 6
        case.loss_fn(case.model(case.data[0][j : j + 1]), case.data[1][j : j + 1]).backward()
        optimizer.step()
    return optimizer


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.999)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_swap_prediction_residual_shrinks_like_lr_cubed(name):
    case = mlp_bce()
    optimizer = warmed(case, OPTIMIZERS[name])
    observable = Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    x, y = case.example(0), case.example(1)
    residuals = []
    for lr in (0.04, 0.02, 0.01):
        real = real_value(case, optimizer, [x, y], observable, lr) - real_value(
            case, optimizer, [y, x], observable, lr
        )
        predicted = predict_swap(
            case.model, case.loss_fn, at_lr(optimizer, lr), x, y, observable, expansion=2
        )
        residuals.append(abs(real - predicted.predicted))
        if name == "sgd":
            assert predicted.state_part == pytest.approx(0.0, abs=1e-15)
    ratios = [residuals[0] / residuals[1], residuals[1] / residuals[2]]
    assert all(6.0 < r < 10.0 for r in ratios), (residuals, ratios)


def test_sgd_swap_prediction_is_the_bracket_at_small_lr():
    case = mlp_bce()
    optimizer = torch.optim.SGD(case.model.parameters(), lr=1e-4)
    observable = Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    got = predict_swap(
        case.model,
        case.loss_fn,
        optimizer,
        case.example(0),
        case.example(3),
        observable,
        expansion=2,
    )
    assert got.predicted == pytest.approx(got.sgd_bracket, rel=1e-3)
    assert got.lr == 1e-4 and got.before == pytest.approx(observable.value(case.model))


def test_third_order_expansion_shrinks_the_residual_to_lr_to_the_fourth():
    case = mlp_bce()
    optimizer = warmed(case, OPTIMIZERS["adam"])
    observable = Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    batches = [case.example(0), case.example(1), case.example(2)]
    residual = {}
    for third in (False, True):
        residual[third] = [
            abs(
                real_value(case, optimizer, batches, observable, lr)
                - predict_order(
                    case.model,
                    case.loss_fn,
                    at_lr(optimizer, lr),
                    batches,
                    observable,
                    expansion=3 if third else 2,
                )
            )
            for lr in (0.02, 0.01)
        ]
    assert residual[True][1] < residual[False][1]
    assert 12.0 < residual[True][0] / residual[True][1] < 20.0, residual


def warmed_pooled_convnet():
    """The ReLU and max-pool convnet after 20 Adam steps on its first minibatch, whose loss is
    the observable, and the two minibatches to swap."""
    case = pooled_relu_convnet()
    warm, first, second = case.minibatches()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=0.01)
    for _ in range(20):
        optimizer.zero_grad()
        case.loss_fn(case.model(warm[0]), warm[1]).backward()
        optimizer.step()
    return case, optimizer, Observable.mean_loss(case.loss_fn, warm), first, second


def test_following_pieces_keeps_the_expansion_converging_across_relu_and_max_pool_kinks():
    # Adam steps at lr 1e-2 flip ReLU signs and pooling winners: expanded on the piece of the
    # start point, the third-order prediction is barely better than the second-order one;
    # expanded on the piece each gradient's point lies on, it converges like a smooth one
    case, optimizer, observable, first, second = warmed_pooled_convnet()
    error = {}
    for lr in (0.01, 0.001):
        real = real_value(case, optimizer, [first, second], observable, lr) - real_value(
            case, optimizer, [second, first], observable, lr
        )
        for follow in (False, True):
            got = predict_swap(
                case.model,
                case.loss_fn,
                at_lr(optimizer, lr),
                first,
                second,
                observable,
                expansion=Expansion(order=3, follow_pieces=follow),
            )
            error[follow, lr] = abs(got.predicted - real) / abs(real)
    assert error[True, 0.01] < 1e-4 < 1e-3 < error[False, 0.01], error
    assert error[True, 0.001] < 1e-6 and error[True, 0.001] < error[False, 0.001] / 100, error


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_best_order_of_three_minibatches_is_the_real_best(name):
    case = mlp_bce()
    optimizer = warmed(case, OPTIMIZERS[name])
    observable = Observable.mean_loss(case.loss_fn, case.example(5))
    batches = case.minibatches()
    lr = 0.05 if name != "adam" else 0.02
    step = at_lr(optimizer, lr)
    got = best_order(case.model, case.loss_fn, step, batches, observable, expansion=2)
    assert got.exhaustive and sorted(got.orders) == list(itertools.permutations(range(3)))
    real = torch.tensor(
        [real_value(case, optimizer, [batches[i] for i in o], observable, lr) for o in got.orders],
        dtype=torch.float64,
    )
    assert got.best == got.orders[int(real.argmin())]
    assert got.worst == got.orders[int(real.argmax())]
    # the order-dependent part (mean over orders removed) within a few percent at these lr
    predicted, real = got.predicted - got.predicted.mean(), real - real.mean()
    assert float((predicted - real).norm() / real.norm()) < 0.05


def test_best_order_beyond_the_budget_is_a_tournament():
    case = CASES["linear_mse"]()
    optimizer = torch.optim.SGD(case.model.parameters(), lr=0.05)
    observable = Observable.mean_loss(case.loss_fn, case.example(4))
    batches = [case.example(i) for i in range(4)]
    got = best_order(
        case.model, case.loss_fn, optimizer, batches, observable, max_orders=6, expansion=2
    )
    assert not got.exhaustive and got.orders[1] == got.orders[0][::-1]


def test_train_mode_batchnorm_batches_use_their_own_statistics_like_training():
    """mean_gradient and hvp of a batch are those of the train-mode loss training computes
    (checked against autograd on the model itself and a finite difference), and the model's
    running statistics are left alone."""
    model, batch = train_mode_batchnorm_net()
    x = batch(6)
    running = model[1].running_mean.clone()
    params = dict(model.named_parameters())
    names = list(params)
    buffers = {k: v.clone() for k, v in model.named_buffers()}

    def train_loss(p):
        outputs = torch.func.functional_call(model, (p, buffers), (x[0],))
        return torch.stack([bce_loss(outputs[i : i + 1], x[1][i : i + 1]) for i in range(6)]).mean()

    expected = torch.autograd.grad(train_loss(params), [params[k] for k in names])
    got = mean_gradient(model, bce_loss, params, x)
    for k, e in zip(names, expected, strict=True):
        torch.testing.assert_close(got[k], e, rtol=1e-12, atol=1e-14)

    u = random_preconditioner(params, seed=3)
    h = hvp(model, bce_loss, params, x, u)
    eps = 1e-5

    def moved(sign):
        return {k: (v + sign * eps * u[k]).detach().requires_grad_() for k, v in params.items()}

    plus, minus = (
        mean_gradient(model, bce_loss, moved(1), x),
        mean_gradient(model, bce_loss, moved(-1), x),
    )
    for k in names:
        torch.testing.assert_close(h[k], (plus[k] - minus[k]) / (2 * eps), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(model[1].running_mean, running, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_train_mode_batchnorm_swaps_are_predicted_like_eval_mode_ones(name):
    """Minibatch swaps with batch statistics, against real train-mode steps: the prediction's
    error shrinks like lr^3 for SGD, and for Adam (with a real state) faster than the swap's
    difference itself."""
    model, batch = train_mode_batchnorm_net()
    x, y, held_out = batch(5), batch(5), batch(8)
    observable = Observable.mean_loss(bce_loss, held_out)  # evaluated with its own batch statistics
    if name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=4e-3)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=4e-3, betas=(0.8, 0.999))
        for _ in range(3):  # a real Adam state
            optimizer.zero_grad()
            b = batch(5)
            bce_loss(model(b[0]), b[1]).backward()
            optimizer.step()
    errors, sizes = [], []
    for lr in (4e-3, 2e-3, 1e-3):
        step = at_lr(optimizer, lr)
        prediction = predict_swap(model, bce_loss, step, x, y, observable, expansion=2)
        xy, yx = (
            values_along_steps(model, bce_loss, step, order, observable.value, [2])[0]
            for order in ([x, y], [y, x])
        )
        errors.append(abs(prediction.predicted - (xy - yx)))
        sizes.append(abs(xy - yx))
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    if name == "sgd":
        assert all(6 < r < 10 for r in ratios), ratios
    else:
        relative = [e / s for e, s in zip(errors, sizes, strict=True)]
        assert relative[0] > relative[1] > relative[2] and relative[2] < 1e-2, relative


def test_third_order_predictions_keep_the_second_order_one_beside_them():
    case = mlp_bce()
    optimizer = warmed(case, OPTIMIZERS["adam"])
    observable = Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    x, y = case.example(0), case.example(1)
    args = (case.model, case.loss_fn, at_lr(optimizer, 0.05))
    second = predict_swap(*args, x, y, observable, expansion=2)
    third = predict_swap(*args, x, y, observable, expansion=3)
    assert second.second_order == second.predicted
    assert third.second_order == pytest.approx(second.predicted, rel=1e-12)
    assert third.predicted != pytest.approx(second.predicted, rel=1e-6)
    batches = case.minibatches()
    plain = best_order(*args, batches, observable, expansion=2)
    both = best_order(*args, batches, observable, expansion=3)
    assert plain.second_order is None
    torch.testing.assert_close(both.second_order, plain.predicted, rtol=1e-12, atol=0)


def test_third_order_with_train_mode_batchnorm_shrinks_the_residual_to_lr_to_the_fourth():
    model, batch = train_mode_batchnorm_net()
    batches = [batch(5), batch(5), batch(5)]
    observable = Observable.mean_loss(bce_loss, batch(8))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    residual = {}
    for third in (False, True):
        residual[third] = []
        for lr in (2e-2, 1e-2):
            step = at_lr(optimizer, lr)
            real = values_along_steps(model, bce_loss, step, batches, observable.value, [3])[0]
            predicted = predict_order(
                model, bce_loss, step, batches, observable, expansion=3 if third else 2
            )
            residual[third].append(abs(real - predicted))
    assert residual[True][1] < residual[False][1] / 10
    assert 12.0 < residual[True][0] / residual[True][1] < 20.0, residual


def test_train_mode_batchnorm_refuses_what_has_no_batch_statistics():
    model, batch = train_mode_batchnorm_net()
    x = batch(4)
    params = dict(model.named_parameters())
    with pytest.raises(ValueError, match="a batch of one has no batch statistics"):
        mean_gradient(model, bce_loss, params, batch(1))
    u = mean_gradient(model, bce_loss, params, x)
    with pytest.raises(ValueError, match=r"single example has no batch statistics.*model.eval"):
        order_scores(model, bce_loss, params, x, u)


def test_exchanged_swaps_one_row_of_each_batch():
    a = (torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 2]))
    b = (10 + torch.arange(4.0).reshape(2, 2), torch.tensor([10, 11]))
    a2, b2 = exchanged(a, b, 1, 0)
    assert a2[0].tolist() == [[0, 1], [10, 11], [4, 5]] and a2[1].tolist() == [0, 10, 2]
    assert b2[0].tolist() == [[2, 3], [12, 13]] and b2[1].tolist() == [1, 11]
    assert a[1].tolist() == [0, 1, 2]  # the inputs are left alone
    keyword = exchanged(({"ids": torch.tensor([1, 2])},), ({"ids": torch.tensor([3, 4])},), 0, 1)
    assert keyword[0][0]["ids"].tolist() == [4, 2] and keyword[1][0]["ids"].tolist() == [3, 1]


def _real_exchange(model, loss_fn, step, a, b, i, j, observable):
    a2, b2 = exchanged(a, b, i, j)
    return (
        values_along_steps(model, loss_fn, step, [a, b], observable.value, [2])[0]
        - values_along_steps(model, loss_fn, step, [a2, b2], observable.value, [2])[0]
    )


def test_exchange_prediction_residual_shrinks_like_lr_cubed_for_sgd():
    """Eval-mode (no BatchNorm) plain SGD: the exchange is second order in lr, its prediction
    is the plain-SGD baseline itself, and the residual shrinks like lr^3."""
    case = mlp_bce()
    optimizer = torch.optim.SGD(case.model.parameters(), lr=0.1)
    observable = Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    a, b = case.minibatches()[:2]
    residuals = []
    for lr in (0.04, 0.02, 0.01):
        step = at_lr(optimizer, lr)
        got = predict_exchange(case.model, case.loss_fn, step, a, b, 0, 1, observable, expansion=2)
        assert got.sgd_bracket == pytest.approx(got.predicted, rel=1e-12)
        real = _real_exchange(case.model, case.loss_fn, step, a, b, 0, 1, observable)
        residuals.append(abs(real - got.predicted))
    ratios = [residuals[0] / residuals[1], residuals[1] / residuals[2]]
    assert all(6.0 < r < 10.0 for r in ratios), (residuals, ratios)


def adam_with_state(model, batch):
    """Adam after three train-mode steps on fresh batches of 5 (moments, step count)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-3, betas=(0.8, 0.999))
    for _ in range(3):
        optimizer.zero_grad()
        c = batch(5)
        bce_loss(model(c[0]), c[1]).backward()
        optimizer.step()
    return optimizer


def test_exchange_with_train_mode_batchnorm_and_adam_is_predicted():
    """Two examples change places between minibatches that keep their own batch statistics,
    trained with Adam from a real state: the relative error of the prediction falls with lr,
    and faster with the third-order expansion."""
    model, batch = train_mode_batchnorm_net()
    a, b, held_out = batch(5), batch(5), batch(8)
    observable = Observable.mean_loss(bce_loss, held_out)
    optimizer = adam_with_state(model, batch)
    relative = {False: [], True: []}
    for lr in (4e-3, 2e-3, 1e-3):
        step = at_lr(optimizer, lr)
        real = _real_exchange(model, bce_loss, step, a, b, 2, 3, observable)
        got = predict_exchange(model, bce_loss, step, a, b, 2, 3, observable, expansion=3)
        relative[False].append(abs(got.second_order - real) / abs(real))
        relative[True].append(abs(got.predicted - real) / abs(real))
    for errors in relative.values():
        assert errors[0] > errors[1] > errors[2], relative
    assert relative[True][2] < relative[False][2] < 1e-2, relative
    with pytest.raises(IndexError, match=r"example \(5, 0\) is not in minibatches of 5 and 5"):
        predict_exchange(model, bce_loss, optimizer, a, b, 5, 0, observable)


def test_expanded_values_along_steps_follow_real_training():
    """O predicted along four Adam steps: the last value is predict_order's, and the error
    against really training shrinks like lr^3 at every step count (lr^4 with third order)."""
    case = mlp_bce()
    optimizer = warmed(case, OPTIMIZERS["adam"])
    observable = Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    batches = [case.example(i) for i in (0, 1, 2, 3)]

    def args(lr=None):
        return case.model, case.loss_fn, at_lr(optimizer, lr), batches

    along = expanded_values_along_steps(*args(0.01), observable, [2, 4], expansion=2)
    assert along[1] == pytest.approx(predict_order(*args(0.01), observable, expansion=2), rel=1e-14)
    for third, expected in ((False, 8.0), (True, 16.0)):
        errors = []
        for lr in (0.004, 0.002):
            real = values_along_steps(*args(lr), observable.value, [2, 4])
            got = expanded_values_along_steps(
                *args(lr), observable, [2, 4], expansion=3 if third else 2
            )
            errors.append([abs(a - b) for a, b in zip(got, real, strict=True)])
        ratios = [errors[0][i] / errors[1][i] for i in range(2)]
        assert all(0.7 * expected < r < 1.3 * expected for r in ratios), (third, ratios)
    with pytest.raises(ValueError, match="step counts from 1 to 4"):
        expanded_values_along_steps(*args(), observable, [5])


def _real_later(args, one, other, later, observable, horizons):
    """O(one, later[:h]) - O(other, later[:h]) by really training both schedules; ``args`` is
    ``(model, loss_fn, step)``."""
    after = [len(one) + h for h in horizons]
    values = [
        values_along_steps(*args, [*s, *later], observable.value, after) for s in (one, other)
    ]
    return [a - b for a, b in zip(*values, strict=True)]


@pytest.mark.parametrize("scheduled", [False, True])
def test_later_differences_are_exact_for_a_quadratic_loss_with_momentum(scheduled):
    """Least squares with momentum SGD is an affine map and the observable is linear: carrying
    the swap's predicted difference along the run's later steps is then exact, each step at its
    own rate (a rising schedule: the later steps run at the rates of steps 2, 3, ...)."""
    case = linear_mse()
    optimizer = warmed(case, OPTIMIZERS["momentum"], steps=6)
    observable = Observable(case.data[0][:3], lambda outputs: outputs.sum(), "sum of outputs")
    x, y = case.example(0), case.example(1)
    later, horizons = [case.example(i) for i in (2, 3, 4, 2)], (0, 1, 4)
    rates = [0.05 * (1 + 0.3 * i) for i in range(6)] if scheduled else [0.05] * 6
    args = (case.model, case.loss_fn, pt.TrainingStep(optimizer, rates=rates))
    got = predict_swap(*args, x, y, observable, later=later, horizons=horizons, expansion=2)
    real = _real_later(args, [x, y], [y, x], later, observable, horizons)
    assert got.later[0] == got.predicted
    torch.testing.assert_close(torch.tensor(got.later), torch.tensor(real), rtol=1e-9, atol=1e-15)
    assert abs(real[2]) > 1e-4 and abs(real[2] - real[0]) > 1e-4  # the swap's effect moves on
    with pytest.raises(ValueError, match="step counts from 0 to the 4 later batches"):
        predict_swap(
            case.model, case.loss_fn, optimizer, x, y, observable, later=later, horizons=(5,)
        )


def test_later_differences_with_adam_and_batch_statistics_follow_real_training():
    """Two examples exchanged between minibatches with their own BatchNorm statistics, Adam
    from a real state, followed for 8 more steps: the relative error of the prediction carried
    along the run falls like lr^2 at every horizon (a bias-only layer before BatchNorm has a
    zero gradient up to rounding, whose second moment must not cross 0)."""
    model, batch = train_mode_batchnorm_net()
    a, b, held_out = batch(5), batch(5), batch(8)
    later = [batch(5) for _ in range(8)]
    observable = Observable.mean_loss(bce_loss, held_out)
    optimizer = adam_with_state(model, batch)
    horizons = (0, 2, 8)
    errors = []
    for lr in (4e-3, 1e-3):
        args = (model, bce_loss, at_lr(optimizer, lr))
        got = predict_exchange(
            *args, a, b, 2, 3, observable, later=later, horizons=horizons, expansion=2
        )
        real = _real_later(args, [a, b], list(exchanged(a, b, 2, 3)), later, observable, horizons)
        errors.append([abs(p - r) / abs(r) for p, r in zip(got.later, real, strict=True)])
    # the relative error falls like lr^2 (about 16x here) at every horizon
    assert all(e1 < e0 / 8 for e0, e1 in zip(*errors, strict=True)), errors
    assert max(errors[1]) < 1e-3, errors


def test_later_differences_follow_pieces_across_relu_and_max_pool_kinks():
    """Past the swap the second run's gradient is expanded at the first run's point in the
    small distance between them; on the piece the second run's point lies on, the error at
    h = 2 and 6 steps later is several times smaller than on the first run's piece."""
    case, optimizer, observable, first, second = warmed_pooled_convnet()
    g = torch.Generator().manual_seed(5)
    later = [case.rows(torch.randperm(40, generator=g)[:10]) for _ in range(6)]
    args, horizons = (case.model, case.loss_fn, at_lr(optimizer, 0.01)), (0, 2, 6)
    real = _real_later(args, [first, second], [second, first], later, observable, horizons)
    error = {}
    for follow in (False, True):
        got = predict_swap(
            *args,
            first,
            second,
            observable,
            expansion=Expansion(order=3, follow_pieces=follow),
            later=later,
            horizons=horizons,
        )
        error[follow] = [abs(p - r) / abs(r) for p, r in zip(got.later, real, strict=True)]
    assert all(f < i / 3 for f, i in zip(error[True], error[False], strict=True)), error


def test_later_batches_without_horizons_are_followed_at_every_step_count():
    case = mlp_bce()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-2)
    warm_up(case, optimizer)
    observable = Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    x, y = case.minibatches()[:2]
    later = [case.minibatches()[1], case.minibatches()[0]]
    got = predict_swap(case.model, case.loss_fn, optimizer, x, y, observable, later=later)
    explicit = predict_swap(
        case.model, case.loss_fn, optimizer, x, y, observable, later=later, horizons=(0, 1, 2)
    )
    assert got.later == explicit.later and len(got.later) == 3
    assert got.later[0] == got.predicted


def test_gradient_clipping_is_modelled_in_the_predictions():
    """With clipping active (half of each minibatch gradient's norm) the predicted swap matches
    really training both orders with ``clip_grad_norm_``; ignoring the clipping does not."""
    case = mlp_bce()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-2)
    warm_up(case, optimizer)
    observable = Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    x, y = case.minibatches()[:2]
    norms = [
        float(vector_norm(mean_gradient(case.model, case.loss_fn, case.params, b))) for b in (x, y)
    ]
    clip = 0.5 * min(norms)
    model, loss_fn = case.model, case.loss_fn
    clipping = pt.TrainingStep(optimizer, max_grad_norm=clip)
    real = [
        values_along_steps(model, loss_fn, clipping, order, observable.value, [2])[0]
        for order in ([x, y], [y, x])
    ]
    real = real[0] - real[1]
    clipped = predict_swap(model, loss_fn, clipping, x, y, observable).predicted
    unclipped = predict_swap(model, loss_fn, optimizer, x, y, observable).predicted
    assert abs(clipped - real) < 1e-3 * abs(real) < abs(unclipped - real), (
        clipped,
        unclipped,
        real,
    )


def test_a_fresh_stateful_optimizer_warns_and_a_warmed_one_does_not():
    case = mlp_bce()
    observable = Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    x, y = case.minibatches()[:2]
    for make in (torch.optim.Adam, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)):
        optimizer = make(case.model.parameters())
        with pytest.warns(pt.FreshOptimizerWarning, match="no state for 4 of the 4"):
            predict_swap(case.model, case.loss_fn, optimizer, x, y, observable, expansion=2)
        warm_up(case, optimizer)
        with warnings.catch_warnings():
            warnings.simplefilter("error", pt.FreshOptimizerWarning)
            predict_swap(case.model, case.loss_fn, optimizer, x, y, observable, expansion=2)
    plain = torch.optim.SGD(case.model.parameters(), lr=0.1)  # no state by design: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", pt.FreshOptimizerWarning)
        predict_swap(case.model, case.loss_fn, plain, x, y, observable, expansion=2)
