"""Order scores (brackets/_scores.py): the plain scores against the pairwise matrix, and
``optimizer_order_scores`` (an example trained in the first rather than the last of a window of
minibatches, with the run's optimizer) against really training both."""

import importlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from cases import (
    ENGINES,
    random_preconditioner,
)
from torch import nn

import perturbative as pt
from perturbative.brackets import (
    mean_gradient,
    moved_first_or_last,
    optimizer_order_scores,
    order_scores,
    projected_bracket_matrix,
)
from perturbative.brackets._swap import steps_on_copies

DTYPE = torch.float64


def loss_fn(outputs, targets):
    return F.binary_cross_entropy_with_logits(outputs, targets)


def setting(kind, **hyper):
    """A float64 MLP, its optimizer warmed up for 15 steps, a window of 3 batches of 8, six
    examples to score and a held-out observable."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(DTYPE)
    x = torch.randn(70, 3, dtype=DTYPE)
    y = (x[:, :1] + 0.5 * torch.randn(70, 1, dtype=DTYPE) > 0).to(DTYPE)
    optimizer = kind(model.parameters(), **hyper)
    for s in range(15):
        rows = slice(8 * (s % 3), 8 * (s % 3) + 8)
        optimizer.zero_grad()
        loss_fn(model(x[rows]), y[rows]).backward()
        optimizer.step()
    window = [(x[24 + 8 * t : 32 + 8 * t], y[24 + 8 * t : 32 + 8 * t]) for t in range(3)]
    examples = (x[48:54], y[48:54])
    observable = pt.Observable.mean_loss(loss_fn, (x[54:], y[54:]))
    return model, optimizer, window, examples, observable


def real(model, step, window, examples, observable, weight=None):
    """O(x first) - O(x last) of each example, really trained with ``step`` (a TrainingStep or
    an optimizer; ``weight`` in place of 1/b)."""
    out = []
    for i in range(len(examples[0])):
        example = (examples[0][i : i + 1], examples[1][i : i + 1])
        if weight is None:
            first, last = moved_first_or_last(model, loss_fn, step, example, observable, window)
        else:
            first, last = (
                observable.value(
                    list(
                        steps_on_copies(
                            model,
                            loss_fn,
                            step,
                            window,
                            extra=[(example, weight) if t == at else None for t in range(3)],
                        )
                    )[-1][0]
                )
                for at in (0, 2)
            )
        out.append(first - last)
    return torch.tensor(out, dtype=DTYPE)


@pytest.mark.parametrize(
    "kind, hyper",
    [
        (torch.optim.Adam, {"lr": 3e-2, "betas": (0.8, 0.999)}),
        (torch.optim.AdamW, {"lr": 3e-2, "weight_decay": 0.1}),
        (torch.optim.SGD, {"lr": 0.3, "momentum": 0.9, "nesterov": True}),
    ],
)
def test_scores_match_really_moving_each_example_to_first_order_in_its_weight(kind, hyper):
    model, optimizer, window, examples, observable = setting(kind, **hyper)
    got = optimizer_order_scores(model, loss_fn, optimizer, examples, observable, window)
    assert got.optimizer == kind.__name__ and got.window == 3 and got.lr == hyper["lr"]
    torch.testing.assert_close(got.scores, got.state_part + got.curvature_part)
    # the score is the derivative in the example's weight: real(w) / (w b) -> score as w -> 0
    errors = []
    for weight in (1 / 8, 1 / 80, 1 / 800):
        moved = real(model, optimizer, window, examples, observable, weight) / (weight * 8)
        assert bool((torch.sign(moved) == torch.sign(got.scores)).all()), (moved, got.scores)
        errors.append(float(((moved - got.scores).abs() / moved.abs()).max()))
    assert errors[2] < 0.03 and errors[0] / errors[1] > 3 and errors[1] / errors[2] > 5, errors
    # the weight-1/b difference moved_first_or_last measures is the same as weight=1/8's
    torch.testing.assert_close(
        real(model, optimizer, window, examples, observable),
        real(model, optimizer, window, examples, observable, 1 / 8),
        rtol=1e-12,
        atol=1e-15,
    )


def test_clipping_is_modelled():
    model, optimizer, window, examples, observable = setting(torch.optim.Adam, lr=3e-2)
    clip = 0.05  # below every batch gradient's norm: every step is clipped
    step = pt.TrainingStep(optimizer, max_grad_norm=clip)
    got = optimizer_order_scores(model, loss_fn, step, examples, observable, window)
    moved = real(model, step, window, examples, observable, 1 / 800)
    torch.testing.assert_close(moved / (8 / 800), got.scores, rtol=0.05, atol=0)


def test_under_plain_sgd_the_score_is_the_plain_sgd_one_and_has_no_state_part_beyond_batches():
    model, optimizer, window, examples, observable = setting(torch.optim.SGD, lr=0.3)
    got = optimizer_order_scores(model, loss_fn, optimizer, examples, observable, window)
    torch.testing.assert_close(got.scores, got.sgd, rtol=1e-12, atol=0)
    # without state, frozen gradients make both orders take the same total step
    assert float(got.state_part.abs().max()) < 1e-12 * float(got.scores.abs().max())


def test_scores_taken_in_chunks_equal_the_whole_pool_at_once():
    """Per-example gradients are held a chunk at a time (memory flat in the pool's size): any
    chunk size gives the same scores, parts and baseline, an uneven last chunk included."""
    model, optimizer, window, examples, observable = setting(torch.optim.Adam, lr=1e-2)
    step = pt.TrainingStep(optimizer, max_grad_norm=0.5)
    whole = optimizer_order_scores(
        model, loss_fn, step, examples, observable, window, chunk_size=10_000
    )
    for size in (1, 4):  # one at a time, and 4 + 2
        got = optimizer_order_scores(
            model, loss_fn, step, examples, observable, window, chunk_size=size
        )
        for name in ("scores", "state_part", "curvature_part", "sgd"):
            torch.testing.assert_close(getattr(got, name), getattr(whole, name), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        optimizer_order_scores(model, loss_fn, step, examples, observable, window, chunk_size=0)


def test_the_batched_products_equal_every_examples_gradient_dotted(monkeypatch):
    """``engine="auto"`` takes each ``lambda . g_x`` as a forward-mode directional derivative of
    a chunk's losses (held to reverse mode on the first chunk); the reference takes every
    example's gradient: the same scores, parts and baseline to rounding. Wrong forward-mode
    products, and a loss that cannot be split by example, fall back."""
    model, optimizer, window, examples, observable = setting(torch.optim.AdamW, lr=1e-2)
    step = pt.TrainingStep(optimizer, max_grad_norm=0.5)
    fast = optimizer_order_scores(model, loss_fn, step, examples, observable, window, chunk_size=4)
    slow = optimizer_order_scores(
        model, loss_fn, step, examples, observable, window, engine="per_example"
    )
    for name in ("scores", "state_part", "curvature_part", "sgd"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), rtol=1e-10, atol=1e-16)

    # forward-mode products that are wrong (as torch's are for some ops) are caught on the
    # first chunk against reverse mode, which then takes every chunk
    def wrong(f, primals, tangents):  # a forward-mode derivative twice what it is
        value, along = torch.func.jvp(f, primals, tangents)
        return value, 2 * along

    monkeypatch.setattr("perturbative.brackets._scores.jvp", wrong)
    caught = optimizer_order_scores(
        model, loss_fn, step, examples, observable, window, chunk_size=4
    )
    torch.testing.assert_close(caught.scores, slow.scores, rtol=1e-10, atol=1e-16)
    monkeypatch.undo()

    from perturbative._core import calls

    def unsplittable(outputs, loss, batch):  # as for outputs with no per-example rows
        raise ValueError("the model's outputs have no rows")

    monkeypatch.setattr(calls, "example_losses", unsplittable)
    kept = optimizer_order_scores(model, loss_fn, step, examples, observable, window)
    torch.testing.assert_close(kept.scores, slow.scores, rtol=1e-12, atol=1e-18)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="engine must be 'auto' or 'per_example'"):
        optimizer_order_scores(model, loss_fn, step, examples, observable, window, engine="fast")


class Attending(nn.Module):
    """One causal self-attention layer through ``F.scaled_dot_product_attention`` (whose CPU
    flash kernel has no forward-mode derivative), then a linear read-out."""

    def __init__(self):
        super().__init__()
        self.qkv, self.out = nn.Linear(3, 12), nn.Linear(4, 1)

    def forward(self, x):  # x: (n, tokens, 3)
        q, k, v = self.qkv(x).view(*x.shape[:2], 3, 1, 4).unbind(2)
        heads = (t.transpose(1, 2) for t in (q, k, v))
        mixed = F.scaled_dot_product_attention(*heads, is_causal=True)
        return self.out(mixed.transpose(1, 2).flatten(2)).mean(1)


def test_attention_keeps_the_forward_mode_products(monkeypatch):
    """Through ``scaled_dot_product_attention`` the products stay forward-mode directional
    derivatives (attention on its math kernel): reverse mode is called once, to check the first
    chunk, and the scores equal every example's gradient dotted."""
    torch.manual_seed(0)
    model = Attending().to(DTYPE)
    x = torch.randn(40, 5, 3, dtype=DTYPE)
    y = (x[:, :1, 0] > 0).to(DTYPE)
    step = pt.TrainingStep(torch.optim.Adam(model.parameters(), lr=1e-2))
    window = [(x[8 * t : 8 * t + 8], y[8 * t : 8 * t + 8]) for t in range(2)]
    examples = (x[16:28], y[16:28])
    observable = pt.Observable.mean_loss(loss_fn, (x[28:], y[28:]))
    where = "perturbative.brackets._scores._reverse_dots"
    calls, reverse = [], importlib.import_module("perturbative.brackets._scores")._reverse_dots
    monkeypatch.setattr(where, lambda *a: calls.append(1) or reverse(*a))
    fast = optimizer_order_scores(model, loss_fn, step, examples, observable, window, chunk_size=4)
    assert len(calls) == 1
    monkeypatch.undo()
    slow = optimizer_order_scores(
        model, loss_fn, step, examples, observable, window, engine="per_example"
    )
    for name in ("scores", "state_part", "sgd"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), rtol=1e-10, atol=1e-16)


def test_a_window_of_one_batch_is_refused():
    model, optimizer, window, examples, observable = setting(torch.optim.Adam, lr=1e-2)
    with pytest.raises(ValueError, match="at least 2 minibatches"):
        optimizer_order_scores(model, loss_fn, optimizer, examples, observable, window[:1])


def test_coordinates_adam_has_not_seen_yet_give_finite_scores():
    """A feature that was zero through the whole run leaves Adam's second moment zero in its
    first-layer weights, where sqrt's derivative is infinite; the scores stay finite."""
    model, optimizer, window, examples, observable = setting(torch.optim.Adam, lr=3e-2)
    for p in optimizer.state.values():
        p["exp_avg_sq"][..., :1] = 0.0 if p["exp_avg_sq"].dim() == 2 else p["exp_avg_sq"][..., :1]
    window = [(x * torch.tensor([0.0, 1.0, 1.0], dtype=DTYPE), y) for x, y in window]
    got = optimizer_order_scores(model, loss_fn, optimizer, examples, observable, window)
    assert bool(torch.isfinite(got.scores).all())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("preconditioned", [False, True])
def test_order_scores_are_row_sums_of_the_projected_matrix(case, engine, preconditioned):
    params = case.params
    u = mean_gradient(case.model, case.loss_fn, params, case.minibatches()[0])
    pre = random_preconditioner(params) if preconditioned else None
    matrix = projected_bracket_matrix(
        case.model, case.loss_fn, params, case.data, u, preconditioner=pre
    )
    with warnings.catch_warnings():
        # the nested forward pass itself is right here: no fallback to forward-over-reverse
        warnings.simplefilter("error", RuntimeWarning)
        scores = order_scores(
            case.model,
            case.loss_fn,
            params,
            case.data,
            u,
            preconditioner=pre,
            engine=engine,
            chunk_size=2,
        )
    torch.testing.assert_close(scores, matrix.sum(dim=1), rtol=1e-10, atol=1e-12)


def test_order_scores_in_float32_do_not_fall_back_on_rounding():
    """In float32 the score g.a - u^T H b may cancel; the self-check measures rounding against
    the two terms, so an MXResNet (no op with a wrong second forward derivative) keeps the
    nested pass."""
    from perturbative.models import mxresnet

    torch.manual_seed(0)
    model = mxresnet(18, num_outputs=4, width=0.0625).eval()
    params = dict(model.named_parameters())
    pool = (torch.randn(6, 3, 16, 16), (torch.rand(6, 4) < 0.5).float())

    def loss_fn(outputs, targets):
        return torch.nn.functional.binary_cross_entropy_with_logits(outputs, targets)

    u = mean_gradient(model, loss_fn, params, pool)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        scores = order_scores(model, loss_fn, params, pool, u, engine="forward")
    reference = order_scores(model, loss_fn, params, pool, u, engine="double_backward")
    torch.testing.assert_close(
        scores, reference, rtol=1e-3, atol=1e-3 * float(reference.abs().max())
    )
