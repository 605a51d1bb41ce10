"""perturbative: perturbation theory of neural-network training.

Two questions, one package:

* What does the order of training examples do? Example x is the vector field
  ``v_x = -grad L_x``; the Lie bracket ``[v_x, v_y] = H_y g_x - H_x g_y`` is the leading
  (``lr^2``) difference between training on x then y and on y then x.
* How do we train toward a perturbed distribution ``p'(x) ~ p(x) exp(-dH(x))``? Weight each
  sample's loss by ``exp(-dH(x))`` and keep each batch's summed weight near a constant.

Every function takes ``(model, loss_fn, params: dict[str, Tensor], data)``; see
:mod:`perturbative.functional` for the conventions.
"""

from perturbative.bracket import (
    BracketTerms,
    ForwardADUnsupportedError,
    adam_preconditioner,
    bracket,
    bracket_matrix,
    bracket_terms,
    minibatch_bracket,
    pair_indices,
    preconditioned_bracket,
    upper_pairs,
)
from perturbative.fields import (
    mean_gradient,
    per_example_gradients,
)
from perturbative.hvp import hvp, per_example_hvps
from perturbative.outputs import (
    order_sensitivity,
    output_shift,
    projected_bracket_matrix,
)
from perturbative.report import write_report
from perturbative.sampler import AdjustedBatchSampler
from perturbative.summaries import (
    cancellation_ratio,
    layer_norms,
    layer_rms,
    vector_norm,
    vector_rms,
)
from perturbative.swap import SwapCheck, swap_check
from perturbative.sweep import (
    SweepData,
    SweepSettings,
    bracket_sweep,
    load_results,
)
from perturbative.tilt import (
    TiltDiagnostics,
    TiltWarning,
    check_tilt,
    effective_sample_size,
    first_order_shift,
    log_tilt_weights,
    max_weight_share,
    tilt_weights,
    weighted_loss,
)

__version__ = "0.1.0"

__all__ = [
    # brackets of training examples
    "bracket",
    "minibatch_bracket",
    "preconditioned_bracket",
    "adam_preconditioner",
    "bracket_matrix",
    "bracket_terms",
    "BracketTerms",
    "ForwardADUnsupportedError",
    "pair_indices",
    "upper_pairs",
    # fields and curvature
    "per_example_gradients",
    "mean_gradient",
    "hvp",
    "per_example_hvps",
    # effects on predictions
    "output_shift",
    "projected_bracket_matrix",
    "order_sensitivity",
    # summaries and the swap experiment
    "vector_norm",
    "vector_rms",
    "layer_norms",
    "layer_rms",
    "cancellation_ratio",
    "swap_check",
    "SwapCheck",
    # sweeps over training and the report
    "SweepData",
    "SweepSettings",
    "bracket_sweep",
    "load_results",
    "write_report",
    # tilted training
    "tilt_weights",
    "log_tilt_weights",
    "weighted_loss",
    "AdjustedBatchSampler",
    "effective_sample_size",
    "max_weight_share",
    "check_tilt",
    "TiltDiagnostics",
    "TiltWarning",
    "first_order_shift",
]
