"""How an order prediction expands each gradient: one frozen options object.

Every prediction of :mod:`perturbative.brackets._predictions` (and the order check of
:mod:`perturbative.pipeline`) takes the optimizer's own steps from ``theta`` and feeds step ``j``
the gradient ``g_j(theta + d)`` expanded in the displacement ``d`` the earlier predicted steps
made. :class:`Expansion` says how: to which order, on which smooth piece of the network, with
which derivative engine. The defaults are the settings every figure in ``docs/results/`` was
measured with.
"""

from __future__ import annotations

from dataclasses import dataclass

from perturbative._core.engines import ENGINES


@dataclass(frozen=True)
class Expansion:
    """How a prediction expands each gradient along the predicted path.

    ``g_j(theta + d) = g_j + H_j d + 1/2 D^3 L_j[d, d] + O(|d|^3)``, every derivative taken at
    ``theta``, on the smooth piece of the network the point ``theta + d`` lies on.

    Attributes:
        order: 2 keeps the Hessian term (the prediction's error is ``O(lr^3)``); 3 adds the third
            derivative (error ``O(lr^4)``; one nested directional derivative per expanded
            gradient), and predictions then also report the second-order value beside it.
        follow_pieces: expand each gradient on the smooth piece of the network that its point
            lies on (the winners of every max-pooling window and the signs of every ReLU input
            there, read from one forward pass: :func:`perturbative.on_pieces`) rather than on the
            piece of ``theta``. A model without max pooling or ReLU is one piece, and the two
            agree; with them, the expansion on ``theta``'s piece errs in proportion to the step.
        engine: ``"auto"`` (forward mode on CUDA, double backward on CPUs), ``"forward"`` or
            ``"double_backward"``: the derivative engine of every HVP and third derivative.

    Example:
        >>> Expansion().order, Expansion(order=2).order
        (3, 2)
    """

    order: int = 3
    follow_pieces: bool = True
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.order not in (2, 3):
            raise ValueError(f"Expansion.order must be 2 or 3, not {self.order!r}")
        if not isinstance(self.follow_pieces, bool):
            raise TypeError(f"Expansion.follow_pieces must be a bool, not {self.follow_pieces!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"Expansion.engine must be one of {ENGINES}, not {self.engine!r}")

    @property
    def third_order(self) -> bool:
        """Whether the third-derivative term is kept."""
        return self.order == 3


def as_expansion(expansion: Expansion | int) -> Expansion:
    """``expansion`` itself, or for the shortcut ``expansion=2`` / ``3`` the default
    :class:`Expansion` of that order."""
    if isinstance(expansion, Expansion):
        return expansion
    if isinstance(expansion, int) and not isinstance(expansion, bool):
        return Expansion(order=expansion)
    raise TypeError(
        f"expansion must be an Expansion or an order (2 or 3), not {type(expansion).__name__}"
    )
