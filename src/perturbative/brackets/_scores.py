"""Order scores: which training examples it matters most to put early or late.

:func:`order_scores` ranks a whole pool by ``S_x = sum_y u . [v_x, v_y]``: ``lr^2 S_x`` is how much
``O`` changes (plain SGD, second order) when ``x`` is trained first rather than last among the
pool. Since ``[v_x, v_x] = 0`` the sum may include ``x``, and

    S_x = g_x . a - u^T H_x b,     a = sum_y H_y u,   b = sum_y g_y,

one batched HVP and one batched gradient of the pool, then per example a directional derivative
along ``a`` and a second directional derivative along ``(u, b)``, both from one nested forward
pass whose inner tangent ``b - s a`` moves with the outer scalar ``s`` (normalisation layers
written out in elementary ops, since torch's fused kernels have wrong second forward-mode
derivatives; checked against forward-over-reverse, which replaces it where another op's are
wrong), in chunks of examples: memory independent of the pool.
With a frozen diagonal preconditioner ``P`` (fields ``-P g``): ``S_x = (P g_x) . a' - (Pu)^T H_x
(P b)``, ``a' = sum_y H_y P u``.

:func:`optimizer_order_scores` scores with the run's optimizer (SGD with momentum, Adam,
AdamW, in their real state). The plain-SGD score ``lr^2 S_x`` is second order in ``lr``: under
an optimizer with state it misses the leading term, and with single-example steps
Adam's response to one example saturates (a near sign step) where a frozen preconditioner does
not. Here an example ``x`` joins one of the run's own minibatches, weighted like the batch's own
examples (``1/b`` for a batch of ``b``), in a window of ``W`` of the run's batches: in the first
batch or in the last. Call the window's steps ``theta_t = step(theta_{t-1}, g_t + e_t)``, with
``e_t`` the gradient an added example contributes. Then, to first order in the one example's
weight and exactly in ``lr``,

    O(x first) - O(x last) = lambda_1 . g_x(theta_0) / b_1 - lambda_W . g_x(theta_{W-1}) / b_W,

with ``lambda_t = dO(theta_W) / de_t`` the adjoint of the window's real trajectory under the
run's optimizer (momentum, Adam's moments and bias correction, weight decay, clipping), taken
by one backward pass through the ``W`` unrolled steps (``torch.func``-style functional steps of
:mod:`perturbative.brackets._optimizers`, gradients with their graphs). The parts:

- the *state part*: the same with every gradient frozen at ``theta`` and ``O`` linear (``u .
  theta_W``): first order in ``lr``, what the optimizer's state alone does;
- the *curvature part*: the rest (the Hessians along the trajectory);
- the *plain-SGD score*: the same adjoint under plain SGD at the same ``lr``, the score of a
  method that ignores the optimizer (a baseline).

Cost: ``W`` minibatch gradients with their graphs and one backward pass through them (twice:
the run's optimizer and plain SGD), ``W`` frozen gradients, and each example's products with
the adjoints at three points (``theta_0``, and the ``theta_{W-1}`` of the run's optimizer and of
plain SGD): per chunk of examples and point, one forward pass, one backward pass with its graph
(``J^T w``) and one more per adjoint (``J lambda``), no per-example gradient stored. Really
training both orders costs ``2 n W`` minibatch steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import jvp, vmap

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.distributed import all_gather_objects, all_reduce_sum, rank_and_world
from perturbative._core.engines import (
    differentiable_kernels,
    elementary_normalization,
    forward_ad_failure,
    run_engine,
)
from perturbative.brackets._gradients import per_example_gradients
from perturbative.brackets._hvp import (
    hessian_vector_product,
)
from perturbative.brackets._observable import Observable
from perturbative.brackets._optimizers import FunctionalOptimizer, functional_optimizer, plain_sgd
from perturbative.brackets._step import TrainingStep
from perturbative.brackets._swap import steps_on_copies, trained_names


def order_scores(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    pool: tuple[Tensor, ...],
    direction: Params,
    *,
    preconditioner: Params | None = None,
    engine: str = "forward",
    chunk_size: int | None = None,
    memory_budget: int = 2 * 2**30,
    process_group: Any = None,
) -> Tensor:
    """``S_x = sum_y u . [v_x, v_y]`` for every example ``x`` of ``pool`` (module docstring).

    ``lr^2 S_x`` is, to second order with plain SGD, how much ``O`` changes when ``x`` is trained
    first rather than last among the pool; ``S`` equals the row sums of
    :func:`perturbative.brackets.projected_bracket_matrix` without holding ``n`` gradients.

    Args:
        pool: ``n`` examples, a data tuple.
        direction: ``u = grad O``, keyed like ``params``.
        preconditioner: optional frozen diagonal ``P`` (fields ``-P g``).
        engine: ``"forward"`` (vmapped nested forward mode over chunks of examples, checked
            against forward-over-reverse on the first example; the default on every device, the
            faster one on a CPU too: ``benchmarks/order_scores.py``, figures in
            ``docs/benchmarks.md``) or ``"double_backward"`` (one gradient graph and one double
            backward per example); ``"auto"`` picks by device. The
            pool sums use the device's faster engine (``"auto"``) unless this is
            ``"double_backward"``.
        chunk_size: examples per chunk, for the pool sums and the per-example scores (default:
            64; for the forward-over-reverse fallback as many as fit ``memory_budget`` bytes,
            counting three parameter-sized tensors per example, at most 64).
        memory_budget: bytes the forward-over-reverse fallback's chunk of examples may hold.
        process_group: a ``torch.distributed`` group (e.g. ``torch.distributed.group.WORLD``)
            to split the pool over: rank ``r`` of ``W`` scores examples ``r, r + W, ...``, the
            two pool sums are all-reduced, and every rank returns all ``n`` scores. Every rank
            passes the same arguments.

    Returns:
        ``(n,)`` tensor of scores, detached.
    """
    params = checks.check_params(model, params)
    pool, n = checks.check_data(pool, "pool")
    checks.check_vector(params, direction, "direction")
    checks.check_train_mode(model, None)
    if preconditioner is not None:
        checks.check_vector(params, preconditioner, "preconditioner")
    scale = (lambda v: v) if preconditioner is None else (lambda v: _times(preconditioner, v))
    pu = scale(direction)
    rank, world = (0, 1) if process_group is None else rank_and_world(process_group)
    everything = pool
    if world > 1:
        pool = calls.take_all(pool, slice(rank, None, world))  # this rank's share
        if calls.num_examples(pool) == 0:
            raise ValueError(f"a pool of {n} examples cannot be split over {world} ranks")
    a, b = _pool_sums(model, loss_fn, params, pool, pu, engine, chunk_size or 64)
    if world > 1:
        all_reduce_sum(a, process_group)
        all_reduce_sum(b, process_group)
    pa, pb = scale(a), scale(b)
    state = calls.fixed_state(model, params)
    # the nested pass holds activations (with three tangents) per example, no parameter-sized
    # tensor: 64 examples at a time (benchmarks/order_scores.py compares chunk sizes);
    # forward-over-reverse holds three parameter-sized tensors per example
    size = sum(v.numel() * v.element_size() for v in params.values())
    nested_chunk = chunk_size or 64
    fallback_chunk = chunk_size or max(1, min(64, memory_budget // max(3 * size, 1)))
    detached = {k: v.detach() for k, v in params.items()}

    def forward() -> Tensor:
        # Nested forward mode: a directional derivative along P a and a second one along (P b, P u),
        # no parameter-sized tensor per example. torch's second forward-mode derivative of its fused
        # normalisation kernels is wrong (layer_norm in torch 2.13:
        # tests/_core/test_engines_models.py), so they run written out in elementary ops; against
        # any other such op the first example is also scored by forward-over-reverse, which is
        # right, and if the two disagree, every example is.
        f = calls.example_loss(model, loss_fn, state)

        # One nested forward pass gives both terms: the inner tangent pb - s pa depends on an
        # outer scalar s, so the outer derivative along (pu, s = 1) of D_{pb - s pa} f is
        # u^T H_x pb - g_x . pa = -S_x. Two single-tangent passes would cost half as much again.
        reference = next(iter(pa.values()))
        zero = torch.zeros((), dtype=reference.dtype, device=reference.device)
        one = torch.ones_like(zero)

        def nested(*example):
            def along_inner(p, s):
                tangent = {k: pb[k] - s * pa[k] for k in pb}
                return jvp(lambda q: f(q, *example), (p,), (tangent,))[1]

            return -jvp(along_inner, (detached, zero), (pu, one))[1]

        over_reverse_hvp, _ = hessian_vector_product(f, detached)

        def products(*example):  # g_x * pa and (H_x pu) * pb by forward-over-reverse
            g, h_u = over_reverse_hvp(pu, *example)
            return [g[k] * pa[k] for k in g], [h_u[k] * pb[k] for k in h_u]

        def over_reverse(*example):
            along_a, cross = products(*example)
            return sum(x.sum() for x in along_a) - sum(x.sum() for x in cross)

        def terms_and_sizes(*example):  # both terms, and the sums of their products' sizes
            parts = products(*example)
            return torch.stack(
                [sum(x.sum() for x in part) for part in parts]
                + [sum(x.abs().sum() for x in part) for part in parts]
            )

        in_dims = (0,) * len(pool)
        first = calls.take_all(pool, slice(0, 1))
        trusted = vmap(terms_and_sizes, in_dims=in_dims)(*first)[0]
        with elementary_normalization():
            checked = vmap(nested, in_dims=in_dims)(*first)[0]
        # rounding is relative to the sizes of what the two dot products add up, which may
        # cancel within each term and between them, so a float32 sum much smaller than its
        # terms can differ between the two passes by rounding alone
        scale = float(trusted[2:].sum())
        tolerance = 1e-9 if trusted.dtype == torch.float64 else 1e-3
        difference = float((checked - (trusted[0] - trusted[1])).abs())
        if difference <= tolerance * scale + 1e-30:
            with elementary_normalization():
                return vmap(nested, in_dims=in_dims, chunk_size=nested_chunk)(*pool)
        warnings.warn(
            "order_scores: torch's second forward-mode derivative of an operation in this model "
            f"is wrong (the first example's score is off by {difference:.3g} against "
            f"forward-over-reverse, whose products add up to {scale:.3g} in size); scoring every "
            "example by forward-over-reverse instead, which is right and slower",
            RuntimeWarning,
            stacklevel=4,
        )
        return vmap(over_reverse, in_dims=in_dims, chunk_size=fallback_chunk)(*pool)

    def double_backward() -> Tensor:
        # S_x = g_x . pa - pu . H_x pb: the gradient and H_x pb from one double-backward pass
        _, gradient_and_product = hessian_vector_product(
            calls.example_loss(model, loss_fn, state), params
        )
        out = []
        for i in range(calls.num_examples(pool)):
            g, h_b = gradient_and_product(pb, *calls.take_all(pool, i))
            out.append(sum((g[k] * pa[k]).sum() - (h_b[k] * pu[k]).sum() for k in g))
        return torch.stack(out)

    scores = run_engine(engine, params, forward=forward, double_backward=double_backward).detach()
    if world > 1:
        shares = all_gather_objects(scores.cpu(), process_group)
        scores = scores.new_empty(calls.num_examples(everything))
        for r, share in enumerate(shares):
            scores[r::world] = share.to(scores)
    checks.check_finite({"scores": scores}, "an order score")
    return scores


def _times(p: Params, v: Params) -> Params:
    return {k: p[k] * v[k] for k in v}


def _pool_sums(model, loss_fn, params, pool, pu, engine, chunk_size) -> tuple[Params, Params]:
    """``a = sum_y H_y pu`` and ``b = sum_y g_y`` over the pool, one gradient-and-HVP pass per
    chunk (the chunk's mean loss, times its size)."""
    n = calls.num_examples(pool)
    loss = calls.batch_loss(model, loss_fn, calls.fixed_state(model, params))
    forward, double_backward = hessian_vector_product(loss, params)
    a = {k: torch.zeros_like(v) for k, v in params.items()}
    b = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, n, chunk_size):
        chunk = calls.take_all(pool, slice(start, start + chunk_size))
        g, h = run_engine(
            "double_backward" if engine == "double_backward" else "auto",
            params,
            forward=lambda chunk=chunk: forward(pu, *chunk),
            double_backward=lambda chunk=chunk: double_backward(pu, *chunk),
        )
        m = calls.num_examples(chunk)
        for k in a:
            a[k] += m * h[k].detach()
            b[k] += m * g[k].detach()
    return a, b


@dataclass
class OptimizerOrderScores:
    """:func:`optimizer_order_scores`' answer, each ``(n,)``: ``O(x first) - O(x last)``.

    Attributes:
        scores: the prediction, ``state_part + curvature_part``.
        state_part: first order in ``lr``: the optimizer's own steps in both orders, gradients
            frozen at ``theta``.
        curvature_part: the rest, the curvature along the window's trajectory.
        sgd: the same score under plain SGD at ``lr`` (a baseline that ignores the optimizer).
        optimizer: the optimizer's class name, which the scores model.
        lr: the learning rate of the steps.
        window: the number of minibatches in the window.
    """

    scores: Tensor
    state_part: Tensor
    curvature_part: Tensor
    sgd: Tensor
    optimizer: str
    lr: float
    window: int


def optimizer_order_scores(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    examples: Any,
    observable: Observable,
    window: Sequence[Any],
    *,
    chunk_size: int | None = None,
    engine: str = "auto",
) -> OptimizerOrderScores:
    """How much training each of ``examples`` in the first rather than the last batch of
    ``window`` changes ``O``, with the optimizer's own steps from its real state (module
    docstring).

    Args:
        model: the model at ``theta``; not modified.
        loss_fn: the per-example loss (a batch of one).
        step: the loop's :class:`~perturbative.TrainingStep` (``SGD``, ``Adam`` or ``AdamW``
            built on the model, in the run's state; its clipping and the lr of each group at
            each step of the window), or the optimizer alone.
        examples: ``n`` examples to score (a data tuple or keyword batch).
        observable: ``O``.
        window: ``W >= 2`` minibatches, the steps the run takes next (one step each); an
            example joins the first or the last, weighted like that batch's own examples.
        chunk_size: examples taken at once (memory grows with it, not with ``n``); default:
            the window's first batch's size, at most 32, as many as the loop itself trained at
            once (GPT-2 small at 4 sequences of 64 tokens: a chunk of 16 held 18.8 GiB, of 4
            fits in 20 GB with the rest of a check).
        engine: how the products ``lambda . g_x`` are taken. ``"auto"``: from one forward pass
            of a chunk and reverse-mode passes over it (each example's loss split from the
            batch's outputs; ``J^T w`` with its graph, then ``d/dw`` of its product with each
            adjoint gives ``J lambda``), no per-example gradient stored; falls back to
            ``"per_example"`` for a model whose outputs cannot be split by example or whose
            BatchNorm is in train mode. ``"per_example"``: every example's gradient, then its
            dot products (the slower reference).

    Returns:
        :class:`OptimizerOrderScores`, each ``(n,)``.
    """
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if len(window) < 2:
        raise ValueError(f"the window needs at least 2 minibatches, not {len(window)}")
    if engine not in ("auto", "per_example"):
        raise ValueError(f"engine must be 'auto' or 'per_example', not {engine!r}")
    names = trained_names(model, step)
    by_name = dict(model.named_parameters())
    window = checks.check_batches(model, window)
    sizes = [calls.num_examples(b) for b in window]
    chunk_size = chunk_size or min(32, sizes[0])
    examples, n = checks.check_data(examples, "examples")
    theta = {k: by_name[k].detach() for k in names}
    state = calls.fixed_state(model, theta)
    read = functional_optimizer(step, {k: by_name[k] for k in names})
    sgd = plain_sgd(names, read.lr, read.max_grad_norm, like=read)  # the run's schedule
    u = observable.gradient(model, {k: v.clone().requires_grad_() for k, v in theta.items()})
    with differentiable_kernels():
        full = window_adjoints(model, loss_fn, observable, read, theta, state, window, frozen=False)
        frozen = window_adjoints(model, loss_fn, observable, read, theta, state, window, u=u)
        plain = window_adjoints(model, loss_fn, observable, sgd, theta, state, window, frozen=False)

    adjoints = {"full": full, "frozen": frozen, "plain": plain}
    # the products each score needs, by the point the example's gradient is taken at: theta
    # (every adjoint of the first step over its batch's size) and each trajectory's point before
    # its last step (minus its adjoint over that batch's size); the frozen score takes both at
    # theta, one vector
    points: list[tuple[Params, list[tuple[str, Params]]]] = [(theta, [])]
    for key, (first, last, before_last) in adjoints.items():
        early = {k: v / sizes[0] for k, v in first.items()}
        late = {k: -v / sizes[-1] for k, v in last.items()}
        if before_last is theta:
            points[0][1].append((key, {k: early[k] + late[k] for k in early}))
        else:
            points[0][1].append((key, early))
            points.append((before_last, [(key, late)]))
    products = _ExampleProducts(model, loss_fn, state, engine)
    parts: dict[str, list[Tensor]] = {key: [] for key in adjoints}
    for start in range(0, n, chunk_size):  # a chunk at a time: memory flat in n
        chunk = calls.take_all(examples, slice(start, min(start + chunk_size, n)))
        totals = dict.fromkeys(adjoints, 0.0)
        for at, wanted in points:
            values = products(at, chunk, [vector for _, vector in wanted])
            for (key, _), value in zip(wanted, values, strict=True):
                totals[key] = totals[key] + value
        for key in adjoints:
            parts[key].append(totals[key])
    scores, state_part, sgd_scores = (torch.cat(parts[key]) for key in ("full", "frozen", "plain"))
    if not bool(torch.isfinite(scores).all()):
        raise FloatingPointError(
            "the order scores are not finite: the window's trajectory or the observable is NaN "
            "or inf at this checkpoint (check the loss there, or use float64)"
        )
    return OptimizerOrderScores(
        scores=scores,
        state_part=state_part,
        curvature_part=scores - state_part,
        sgd=sgd_scores,
        optimizer=read.name,
        lr=read.lr,
        window=len(window),
    )


def window_adjoints(
    model: nn.Module,
    loss_fn: LossFn,
    observable: Observable,
    read: FunctionalOptimizer,
    theta: Params,
    state: dict[str, Tensor],
    window: list[tuple[Any, ...]],
    *,
    frozen: bool = True,
    u: Params | None = None,
) -> tuple[Params, Params, Params]:
    """``(lambda_1, lambda_W, theta_{W-1})`` of the window's unrolled steps under ``read``:
    ``lambda_t = dO(theta_W)/de_t`` for a gradient ``e_t`` added at the first and last steps.
    ``frozen``: every gradient at ``theta`` and ``O`` replaced by ``u . theta_W``."""
    loss = calls.batch_loss(model, loss_fn, state)
    start = {k: v.clone().requires_grad_() for k, v in theta.items()}
    added = [{k: torch.zeros_like(v, requires_grad=True) for k, v in theta.items()} for _ in "fl"]
    params, opt_state, before_last = start, read.state, theta
    for t, batch in enumerate(window):
        at = start if frozen else params
        grads = torch.autograd.grad(loss(at, *batch), list(at.values()), create_graph=not frozen)
        grads = {k: g if not frozen else g.detach() for k, g in zip(at, grads, strict=True)}
        checks.check_finite(grads, f"the gradient of the window's batch {t}")
        if t == 0:
            grads = {k: g + added[0][k] for k, g in grads.items()}
        if t == len(window) - 1:
            if not frozen:  # frozen gradients are all taken at theta
                before_last = {k: v.detach() for k, v in params.items()}
            grads = {k: g + added[1][k] for k, g in grads.items()}
        params, opt_state = read.step(params, grads, opt_state, t, recompute=True)
    if frozen:
        value = sum((u[k] * params[k]).sum() for k in u)
    else:
        value = observable.evaluate(model, params, state)
    keys = [(a, k) for a in (0, 1) for k in theta]  # both adjoints from one backward pass
    grads = torch.autograd.grad(value, [added[a][k] for a, k in keys], allow_unused=True)
    first, last = ({}, {})
    for (a, k), g in zip(keys, grads, strict=True):
        (first, last)[a][k] = torch.zeros_like(theta[k]) if g is None else g.detach()
    return first, last, before_last


class _ExampleProducts:
    """``[v . g_x(at) for v in vectors]`` for a chunk of examples, each ``(n,)`` in float64:
    forward-mode directional derivatives of the chunk's losses, held once (on the first call) to
    reverse mode; reverse mode where forward mode fails or errs; every example's gradient (the
    reference, ``engine="per_example"``) where the losses cannot be split by example or
    BatchNorm is in train mode."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, state: dict[str, Tensor], engine: str):
        self.model, self.loss_fn, self.state = model, loss_fn, state
        batched = engine == "auto" and not checks.train_mode_batchnorm(model)
        self.mode = "forward" if batched else "per_example"
        self.checked = False

    def __call__(self, at: Params, chunk: tuple[Any, ...], vectors: list[Params]) -> list[Tensor]:
        values = None
        if self.mode == "forward":
            values = _forward_dots(self._losses(at, chunk), at, vectors)
            if values is None:
                self.mode = "reverse"
            elif not self.checked:
                self.checked = True
                reverse = _reverse_dots(self._losses(at, chunk), at, vectors)
                precise = next(iter(at.values())).dtype == torch.float64
                if reverse is not None and not _agree(values, reverse, precise):
                    values, self.mode = reverse, "reverse"  # a wrong forward-mode derivative
        if values is None and self.mode == "reverse":
            values = _reverse_dots(self._losses(at, chunk), at, vectors)
            if values is None:
                self.mode = "per_example"
        if values is None:
            gradients = _example_gradients(self.model, self.loss_fn, at, chunk)
            values = [_dots(gradients, vector) for vector in vectors]
        return values

    def _losses(self, at: Params, examples: tuple[Any, ...]) -> Callable[[Params], Tensor]:
        """The examples' losses ``(n,)`` as a function of the parameters, from one forward pass
        (their rows of the outputs, :func:`perturbative._core.calls.example_losses`)."""

        def losses(params: Params) -> Tensor:
            outputs = calls.call_model(self.model, params, self.state, examples[0])
            return calls.example_losses(outputs, self.loss_fn, examples)

        return losses


def _reverse_dots(
    losses: Callable[[Params], Tensor], at: Params, vectors: list[Params]
) -> list[Tensor] | None:
    """``[v . g_x(at) for v in vectors]`` from one forward pass and reverse-mode passes over
    it: with ``l`` the examples' losses and a dummy ``w``, ``J^T w = d(w . l)/d(at)`` keeps its
    graph, and ``d((J^T w) . v)/dw = J v`` (linear in ``w``, so any ``w`` will do). None where
    the losses cannot be split by example."""
    params = {k: v.detach().clone().requires_grad_() for k, v in at.items()}
    with differentiable_kernels():
        try:
            values = losses(params)
        except Exception:  # a loss that reads batch-wide fields: one example at a time
            return None
        w = torch.zeros_like(values, requires_grad=True)
        names = list(params)
        grads = torch.autograd.grad(
            values, [params[k] for k in names], grad_outputs=w, create_graph=True, allow_unused=True
        )
        out = []
        for j, vector in enumerate(vectors):
            along = sum(
                (g * vector[k]).sum() for g, k in zip(grads, names, strict=True) if g is not None
            )
            (jv,) = torch.autograd.grad(along, w, retain_graph=j < len(vectors) - 1)
            out.append(jv.detach().to(torch.float64))
    return out


def _forward_dots(
    losses: Callable[[Params], Tensor], at: Params, vectors: list[Params]
) -> list[Tensor] | None:
    """``[v . g_x(at) for v in vectors]`` as forward-mode directional derivatives of the
    examples' losses (one forward pass with a tangent per vector, attention on its math kernel);
    None where the losses cannot be split by example or an op has no forward-mode derivative."""
    params = {k: v.detach() for k, v in at.items()}
    out = []
    try:
        # attention's math kernel: the CPU flash kernel has no forward-mode derivative, and
        # reverse mode instead took 1.17 s against 0.96 s per example for three products at
        # one point on GPT-2 small (docs/results/gpt2-small.md)
        with differentiable_kernels():
            for vector in vectors:
                tangent = {k: vector[k].to(params[k]) for k in params}
                _, along = jvp(losses, (params,), (tangent,))
                out.append(along.detach().to(torch.float64))
    except Exception as error:  # no forward-mode derivative, or a loss that cannot be split
        if isinstance(error, ValueError) or forward_ad_failure(error) is not None:
            return None
        raise
    return out


def _agree(a: list[Tensor], b: list[Tensor], precise: bool) -> bool:
    """Whether two ways of taking the same products agree to rounding (relative to each
    vector's largest product; float64 ``precise``, else float32)."""
    tolerance = 1e-9 if precise else 1e-3
    for x, y in zip(a, b, strict=True):
        if y.numel() and float((x - y).abs().max()) > tolerance * float(y.abs().max()) + 1e-30:
            return False
    return True


def _example_gradients(
    model: nn.Module, loss_fn: LossFn, at: Params, examples: tuple[Any, ...]
) -> Params:
    """Every example's gradient at ``at``, stacked (double backward: a keyword batch's model
    may not vmap)."""
    params = {k: v.detach().clone().requires_grad_() for k, v in at.items()}
    return per_example_gradients(model, loss_fn, params, examples, engine="double_backward")


def _dots(gradients: Params, vector: Params) -> Tensor:
    """``vector . g_x`` for every example's stacked gradient ``g_x``, ``(n,)`` in float64."""
    return sum(
        (gradients[k].flatten(1) * vector[k].flatten()).sum(1).to(torch.float64) for k in vector
    )


def moved_first_or_last(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    example: Any,
    observable: Observable,
    window: Sequence[Any],
    weight: float | None = None,
) -> tuple[float, float]:
    """Really train the window on copies of the model and optimizer with ``example`` in its
    first batch, then in its last: ``(O first, O last)``, what :func:`optimizer_order_scores`
    predicts the difference of. The example weighs ``weight`` in its batch's loss (default:
    like each of the batch's own examples, ``1/n``); the score is the difference's derivative
    in that weight, times ``1/n``."""
    window = checks.check_batches(model, window)
    example, _ = checks.check_data(example, "example")
    values = []
    for at in (0, len(window) - 1):
        extra = [None] * len(window)
        own = 1.0 / calls.num_examples(window[at])
        extra[at] = (example, own if weight is None else float(weight))
        *_, (trained, _) = steps_on_copies(model, loss_fn, step, window, extra=extra)
        values.append(observable.value(trained))
    return values[0], values[1]
