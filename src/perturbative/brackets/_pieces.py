"""The smooth piece of a piecewise-smooth network that a point lies on.

Max pooling and ReLU make a network's loss piecewise smooth: inside a piece (fixed winners of every
pooling window, fixed signs of every ReLU input) it is as smooth as the rest of the network, but a
step crosses piece boundaries: at a run's lr one Adam step changes the winners of a share of the
pooling windows that grows linearly with the step (``benchmarks/piece_remainder.py`` counts them). A
Taylor expansion of the gradient at ``theta`` describes only the piece ``theta`` lies on, so along
such a step its remainder shrinks like the step, not like its cube: the expansion stops improving
with its order.

The remedy is to expand the gradient of the piece the step *reaches*: read which piece
``theta + d`` lies on from one forward pass there (:func:`record_pieces`), then take the
gradient and its derivatives at ``theta`` with every piecewise op held on that piece
(:func:`on_pieces`: a pooling window passes on the input its winner at ``theta + d`` had, a
ReLU passes the inputs that were positive there). That piece's function is smooth and equals
the network's at ``theta + d``, so its expansion converges like a smooth one.

Both work as :class:`torch.overrides.TorchFunctionMode`, on any model that calls
``F.max_pool1d/2d/3d`` (``nn.MaxPool*d``), ``F.relu``, ``torch.relu`` or ``Tensor.relu``
(``nn.ReLU``), without hooks: the ``k``-th such call of a forward pass is held on the ``k``-th
recorded selection. Other kinks (``abs``, ``clamp``, a hand-written ``max``) are expanded as if
smooth.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_POOLS = {
    F.max_pool1d: F.max_pool1d_with_indices,
    F.max_pool2d: F.max_pool2d_with_indices,
    F.max_pool3d: F.max_pool3d_with_indices,
}
_POOLS_WITH_INDICES = set(_POOLS.values())
_RELUS = {F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}


@dataclass(frozen=True)
class Selection:
    """What one piecewise op selected at the recorded point.

    Attributes:
        kind: ``"max_pool"`` (``chosen``: the winners' flat indices into each input plane, shaped
            like the op's output) or ``"relu"`` (``chosen``: ``input > 0``, shaped like the input).
        input_shape: the shape of the op's input, to catch a forward pass that runs differently.
    """

    kind: str
    chosen: Tensor
    input_shape: tuple[int, ...]


class PieceMismatchError(RuntimeError):
    """A forward pass made other piecewise calls than the one its pieces were recorded on."""


def _pool_arguments(func, args, kwargs) -> tuple[Tensor, Callable, tuple, dict, bool]:
    """``(input, the call with indices, its other arguments, its keywords, whether the caller
    wants the indices)`` of a max-pool call (signature ``(input, kernel_size, stride, padding,
    dilation, ceil_mode, return_indices)``)."""
    kwargs = dict(kwargs)
    wants = func in _POOLS_WITH_INDICES or bool(kwargs.pop("return_indices", False))
    rest = args[1:]
    if len(rest) > 5:  # return_indices given by position
        wants = wants or bool(rest[5])
        rest = rest[:5]
    with_indices = func if func in _POOLS_WITH_INDICES else _POOLS[func]
    return args[0], with_indices, tuple(rest), kwargs, wants


class _Recording(torch.overrides.TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.selections: list[Selection] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _POOLS or func in _POOLS_WITH_INDICES:
            x, with_indices, rest, kw, wants = _pool_arguments(func, args, kwargs)
            out, indices = with_indices(x, *rest, **kw)
            self.selections.append(Selection("max_pool", indices, tuple(x.shape)))
            return (out, indices) if wants else out
        if func in _RELUS:
            x = args[0]
            self.selections.append(Selection("relu", x.detach() > 0, tuple(x.shape)))
        return func(*args, **kwargs)


class _Holding(torch.overrides.TorchFunctionMode):
    def __init__(self, selections: list[Selection]) -> None:
        super().__init__()
        self.selections = selections
        self.position = 0

    def _next(self, kind: str, x: Tensor) -> Selection:
        if not self.selections:
            raise PieceMismatchError("no piecewise op ran where the pieces were recorded")
        selection = self.selections[self.position % len(self.selections)]
        self.position += 1  # a new forward pass starts the sequence again
        if selection.kind != kind or selection.input_shape != tuple(x.shape):
            raise PieceMismatchError(
                f"piecewise op {self.position} of the forward pass is a {kind} on an input of "
                f"shape {tuple(x.shape)}, but where its piece was recorded it was a "
                f"{selection.kind} on {selection.input_shape}: the model must run the same ops "
                "on the same batch at both points"
            )
        return selection

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _POOLS or func in _POOLS_WITH_INDICES:
            x, _, _, _, wants = _pool_arguments(func, args, kwargs)
            indices = self._next("max_pool", x).chosen
            out = x.flatten(2).gather(2, indices.flatten(2)).reshape(indices.shape)
            return (out, indices) if wants else out
        if func in _RELUS:
            x = args[0]
            return x * self._next("relu", x).chosen.to(x.dtype)
        return func(*args, **kwargs)


def record_pieces(forward: Callable[[], object]) -> list[Selection]:
    """Run ``forward()`` (a forward pass at the point of interest) and return what each of its
    piecewise ops selected, in call order; empty when the model has none."""
    recording = _Recording()
    with torch.no_grad(), recording:
        forward()
    return recording.selections


@contextlib.contextmanager
def on_pieces(selections: list[Selection]) -> Iterator[None]:
    """Hold every piecewise op of the forward passes in the block on ``selections`` (from
    :func:`record_pieces`): the block then differentiates that piece's smooth function. Each
    forward pass must make the same piecewise calls, on the same shapes, as the recorded one
    (else :class:`PieceMismatchError`). Nothing changes for an empty list."""
    if not selections:
        yield
        return
    with _Holding(selections):
        yield
