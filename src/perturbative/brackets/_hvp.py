"""Hessian-vector products ``H_A u`` of a minibatch loss, and of single examples in bulk.

``H_A`` is the Hessian of ``L_A = mean_{x in A} L_x`` with respect to the parameters. Two ways to
compute ``H u`` exactly, both without forming ``H``:

* forward-over-reverse: ``jvp(grad(L), (theta,), (u,))``, one forward-mode pass through the
  gradient computation; batches well under ``vmap``;
* reverse-over-reverse (double backward): ``grad(<grad L(theta), u>)`` through a gradient built
  with ``create_graph=True``; the graph can be reused for many ``u``.

Both give the same numbers up to rounding; the tests check them against each other and against
dense Hessians. :func:`hessian_vector_product` is the one factory of both, and
:func:`retained_hvp` the double-backward product through gradient graphs kept for reuse: every
function in the package that needs ``H u`` builds it here. :func:`third_derivative` is the next
derivative, ``D^3 L_A[u, u, .]``, the change of ``H_A u`` along ``u`` (for third-order
expansions).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.engines import elementary_normalization, run_engine


def hessian_vector_product(
    loss: Callable[..., Tensor], params: Params
) -> tuple[Callable[..., tuple[Params, Params]], Callable[..., tuple[Params, Params]]]:
    """The two engines' ``(u, *batch) -> (grad L, H u)`` for a pure loss ``loss(params, *batch)``.

    Returns:
        ``(forward, double_backward)``: forward-over-reverse (``jvp`` of ``grad``, composable with
        ``vmap``) and reverse-over-reverse (``autograd.grad`` of ``<grad L, u>``), each returning
        the gradient and the product as dicts keyed like ``params``, detached.
    """
    detached = {k: v.detach() for k, v in params.items()}
    names = list(params)

    def forward(vector: Params, *batch: Tensor) -> tuple[Params, Params]:
        return jvp(lambda p: grad(loss)(p, *batch), (detached,), (vector,))

    def double_backward(vector: Params, *batch: Tensor) -> tuple[Params, Params]:
        g = calls.grad_or_zero(
            [loss(params, *batch)], [params[k] for k in names], create_graph=True
        )
        dot = sum((gi * vector[k]).sum() for gi, k in zip(g, names, strict=True))
        product = calls.grad_or_zero([dot], [params[k] for k in names])
        return (
            {k: gi.detach() for k, gi in zip(names, g, strict=True)},
            dict(zip(names, product, strict=True)),
        )

    return forward, double_backward


def retained_hvp(
    products: list[tuple[Params, Params]], params: Params, *, retain_graph: bool = True
) -> Params:
    """``sum_k H_k u_k`` by one backward pass through gradients built with ``create_graph=True``.

    The double-backward engine's reuse of a gradient graph: ``H_k u_k`` is the vector-Jacobian
    product of the gradient ``g_k`` (its graph kept) with ``u_k``, so many vectors, or the two
    halves of a bracket, cost one backward each instead of a fresh gradient pass.

    Args:
        products: pairs ``(g_k, u_k)``: a gradient keyed like ``params`` that carries its graph
            (:func:`perturbative.brackets._gradients.gradients_with_graph`) and a vector.
        params: the leaves the gradients were taken with respect to.
        retain_graph: keep the graphs for further products.

    Returns:
        dict keyed and shaped like ``params`` (not detached from nothing: plain tensors).
    """
    names = list(params)
    outputs = [graph[k] for graph, _ in products for k in names]
    vectors = [vector[k] for _, vector in products for k in names]
    out = calls.grad_or_zero(
        outputs, [params[k] for k in names], grad_outputs=vectors, retain_graph=retain_graph
    )
    return dict(zip(names, out, strict=True))


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    vector: Params,
    *,
    engine: str = "auto",
    batch_context: Tensor | None = None,
) -> Params:
    """``H_A u``: the Hessian of the minibatch loss ``mean_{x in A} L_x`` times ``vector``.

    With BatchNorm in train mode, ``L_A`` is the loss of the batch normalised by its own
    statistics, as a training step computes it (double-backward engine).

    Args:
        data: the minibatch ``A``, a tuple of tensors with leading dimension ``n``.
        vector: ``u``, a dict keyed and shaped like ``params``.

    Returns:
        dict keyed and shaped like ``params``, detached.

    Example:
        For ``L_x(w) = 1/2 (w . x - y)^2`` the Hessian is ``x x^T``, so ``hvp`` returns
        ``x (x . u)``.
    """
    return gradient_and_hvp(
        model, loss_fn, params, data, vector, engine=engine, batch_context=batch_context
    )[1]


def gradient_and_hvp(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    vector: Params,
    *,
    engine: str = "auto",
    batch_context: Tensor | None = None,
) -> tuple[Params, Params]:
    """``(g_A, H_A u)``: the minibatch gradient (as :func:`mean_gradient` gives it) and
    :func:`hvp`, from one pass (an HVP computes the gradient on its way). Arguments as
    :func:`hvp`."""
    params, data, loss = _checked_batch_loss(model, loss_fn, params, data, vector, batch_context)
    forward, double_backward = hessian_vector_product(loss, params)
    g, h = run_engine(
        engine,
        params,
        forward=lambda: forward(vector, *data),
        double_backward=lambda: double_backward(vector, *data),
        batch_context=batch_context,
        batch_statistics=bool(checks.train_mode_batchnorm(model)),
    )
    g, h = ({k: v.detach() for k, v in d.items()} for d in (g, h))
    checks.check_finite(g, "the minibatch gradient")
    checks.check_finite(h, "a Hessian-vector product")
    return g, h


def _checked_batch_loss(model, loss_fn, params, data, vector, batch_context=None):
    """Checked ``params`` and ``data`` and the minibatch loss ``L_A(params, *data)`` that
    :func:`hvp` and :func:`third_derivative` differentiate."""
    params = checks.check_params(model, params)
    data, n = checks.check_data(data)
    checks.check_vector(params, vector, "vector")
    checks.check_train_mode(model, batch_context, whole_batches=(n,))
    loss = calls.batch_loss(model, loss_fn, calls.fixed_state(model, params), batch_context)
    return params, data, loss


def third_derivative(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    vector: Params,
    *,
    engine: str = "auto",
) -> Params:
    """``D^3 L_A[u, u, .]``: the derivative of ``H_A u`` along ``u``, a vector like ``params``.

    ``g_A(theta + u) = g_A + H_A u + 1/2 D^3 L_A[u, u, .] + O(|u|^3)``. Forward engine: forward
    over forward over reverse. Double-backward engine (and train-mode BatchNorm, whose loss is
    the batch's with its own statistics, as in :func:`hvp`): the gradient of ``u . H_A u``, three
    reverse passes. Both run with normalisation layers written out in elementary ops
    (:func:`perturbative._core.engines.elementary_normalization`): torch's fused kernels get
    third derivatives wrong.

    Args:
        data: the minibatch ``A``.
        vector: ``u``, a dict keyed and shaped like ``params``.

    Example:
        For ``L(w) = 1/6 (w . x)^3`` the result is ``(u . x)^2 x``.
    """
    params, data, loss = _checked_batch_loss(model, loss_fn, params, data, vector)
    theta = {k: v.detach() for k, v in params.items()}
    names = list(params)

    def forward() -> Params:
        def hessian_times_u(p: Params) -> Params:
            return jvp(lambda q: grad(loss)(q, *data), (p,), (vector,))[1]

        return jvp(hessian_times_u, (theta,), (vector,))[1]

    def double_backward() -> Params:
        leaves = [params[k] for k in names]
        g = calls.grad_or_zero([loss(params, *data)], leaves, create_graph=True)
        along = sum((gi * vector[k]).sum() for gi, k in zip(g, names, strict=True))
        h = calls.grad_or_zero([along], leaves, create_graph=True)
        curvature = sum((hi * vector[k]).sum() for hi, k in zip(h, names, strict=True))
        return dict(zip(names, calls.grad_or_zero([curvature], leaves), strict=True))

    with elementary_normalization():
        out = run_engine(
            engine,
            params,
            forward=forward,
            double_backward=double_backward,
            batch_statistics=bool(checks.train_mode_batchnorm(model)),
        )
    out = {k: v.detach() for k, v in out.items()}
    checks.check_finite(out, "a third derivative")
    return out


def per_example_hvps(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    vector: Params,
    *,
    engine: str = "auto",
    chunk_size: int | None = None,
    batch_context: Tensor | None = None,
) -> tuple[Params, Params]:
    """Gradients ``g_x`` and products ``H_x u`` for every example ``x``, with one fixed ``u``.

    Returns:
        ``(gradients, products)``: dicts keyed like ``params`` with shape ``(n, *param.shape)``.
    """
    params = checks.check_params(model, params)
    data, n = checks.check_data(data)
    checks.check_vector(params, vector, "vector")
    checks.check_train_mode(model, batch_context)
    state = calls.fixed_state(model, params)

    def forward() -> tuple[Params, Params]:
        one, _ = hessian_vector_product(calls.example_loss(model, loss_fn, state), params)
        in_dims = (0,) * len(data)
        return vmap(lambda *x: one(vector, *x), in_dims=in_dims, chunk_size=chunk_size)(*data)

    def double_backward() -> tuple[Params, Params]:
        _, one = hessian_vector_product(
            calls.example_loss(model, loss_fn, state, batch_context), params
        )
        pairs = [one(vector, *calls.take_all(data, i)) for i in range(n)]
        return calls.stack([g for g, _ in pairs]), calls.stack([h for _, h in pairs])

    grads, products = run_engine(
        engine,
        params,
        forward=forward,
        double_backward=double_backward,
        batch_context=batch_context,
    )
    checks.check_finite(grads, "a per-example gradient")
    checks.check_finite(products, "a Hessian-vector product")
    return grads, products
