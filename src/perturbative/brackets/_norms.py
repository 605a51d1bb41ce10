"""Norms of parameter-space vectors and the cancellation ratio of brackets.

Vectors over parameter space (gradients ``g_x``, brackets ``[v_x, v_y]``) are dicts keyed like
``params``; a stack of them carries ``leading`` extra dimensions in front of each parameter's
shape, e.g. ``(n, *param.shape)`` for per-example gradients or ``(n, n, *param.shape)`` for a
bracket matrix. Every function here reduces over the parameter dimensions and keeps the leading
ones.

Sums of squares are accumulated in float64 (fp32 squares of large brackets would overflow or
lose digits) and results are float64, on the vectors' device.

The cancellation ratio of a pair,

    rho_ij = |[v_i, v_j]| / (|H_j g_i| + |H_i g_j|),       0 <= rho_ij <= 1,

says how much of the two Hessian-gradient products survived their difference
``[v_i, v_j] = H_j g_i - H_i g_j``. A bracket computed in a floating-point format with unit
roundoff ``u`` has a relative error of roughly ``u / rho``: ``rho = 1e-3`` in fp32 leaves about
four significant digits.

Example:
    >>> import torch
    >>> g = {"w": torch.tensor([[3.0, 0.0], [0.0, 1.0]]), "b": torch.tensor([[4.0], [0.0]])}
    >>> vector_norm(g, leading=1)
    tensor([5., 1.], dtype=torch.float64)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from perturbative.brackets._bracket import BracketTerms


def _leading_shape(vectors: Mapping[str, Tensor], leading: int) -> torch.Size:
    if not isinstance(vectors, Mapping) or not vectors:
        raise ValueError(
            "vectors must be a non-empty dict of parameter name -> tensor, keyed like params"
        )
    if leading < 0:
        raise ValueError(f"leading must be >= 0, not {leading}")
    shapes = {}
    for name, value in vectors.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"vectors[{name!r}] is a {type(value).__name__}, not a tensor")
        if value.dim() < leading:
            raise ValueError(
                f"vectors[{name!r}] has shape {tuple(value.shape)}, fewer than leading={leading} "
                "dimensions"
            )
        shapes[name] = value.shape[:leading]
    distinct = set(shapes.values())
    if len(distinct) != 1:
        raise ValueError(
            f"the {leading} leading dimension(s) differ between parameter tensors: "
            f"{ {k: tuple(s) for k, s in shapes.items()} }; stack every tensor the same way"
        )
    return distinct.pop()


def layer_squared_norms(
    vectors: Mapping[str, Tensor], *, leading: int = 0
) -> tuple[Tensor, list[str]]:
    """Squared Euclidean norm of each parameter tensor's block.

    Args:
        vectors: dict keyed like ``params``; values of shape ``(*lead, *param.shape)``.
        leading: number of leading (stacking) dimensions ``len(lead)``.

    Returns:
        ``(squares, names)``: float64 tensor of shape ``(*lead, L)`` for the ``L`` tensors, in
        the order of ``names`` (the dict's order).
    """
    lead = _leading_shape(vectors, leading)
    names = list(vectors)
    columns = [vectors[k].reshape(*lead, -1).to(torch.float64).square().sum(dim=-1) for k in names]
    return torch.stack(columns, dim=-1), names


def layer_norms(vectors: Mapping[str, Tensor], *, leading: int = 0) -> tuple[Tensor, list[str]]:
    """Euclidean norm of each parameter tensor's block: ``(*lead, L)`` and the ``L`` names."""
    squares, names = layer_squared_norms(vectors, leading=leading)
    return squares.sqrt(), names


def layer_rms(vectors: Mapping[str, Tensor], *, leading: int = 0) -> tuple[Tensor, list[str]]:
    """Root-mean-square entry of each parameter tensor: ``|block| / sqrt(numel)``.

    Makes tensors of different sizes comparable (a bias and a weight matrix).

    Returns:
        ``(rms, names)``: float64 ``(*lead, L)`` and the ``L`` parameter names.
    """
    squares, names = layer_squared_norms(vectors, leading=leading)
    numel = torch.tensor(
        [math.prod(vectors[k].shape[leading:]) for k in names],
        dtype=torch.float64,
        device=squares.device,
    )
    return (squares / numel).sqrt(), names


def vector_norm(vectors: Mapping[str, Tensor], *, leading: int = 0) -> Tensor:
    """Euclidean norm over all parameters: ``sqrt(sum over tensors of |block|^2)``, ``(*lead,)``."""
    squares, _ = layer_squared_norms(vectors, leading=leading)
    return squares.sum(dim=-1).sqrt()


def vector_rms(vectors: Mapping[str, Tensor], *, leading: int = 0) -> Tensor:
    """Root-mean-square entry over all parameters: ``vector_norm / sqrt(total numel)``."""
    squares, names = layer_squared_norms(vectors, leading=leading)
    total = sum(math.prod(vectors[k].shape[leading:]) for k in names)
    return (squares.sum(dim=-1) / total).sqrt()


def cancellation_ratio(terms: BracketTerms) -> Tensor:
    """``rho[i, j] = |[v_i, v_j]| / (|H_j g_i| + |H_i g_j|)`` for all pairs.

    With a preconditioner the products are ``P H_j P g_i`` (as stored in ``terms``). Where both
    products vanish the bracket is exactly zero and nothing cancelled; ``rho`` is then 0. The
    diagonal is 0 (``[v_i, v_i] = 0``).

    Args:
        terms: from :func:`perturbative.brackets.bracket_terms`;
            ``terms.hessian_gradients[k][j, i] = P H_j P g_i``, shape ``(n, n, *param.shape)``.

    Returns:
        float64 tensor ``(n, n)``, symmetric, in ``[0, 1]``.
    """
    products = vector_norm(terms.hessian_gradients, leading=2)  # [j, i] = |H_j g_i|
    brackets = vector_norm(terms.brackets(), leading=2)
    total = products + products.T
    ratio = torch.where(total > 0, brackets / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
    return ratio.fill_diagonal_(0.0)
