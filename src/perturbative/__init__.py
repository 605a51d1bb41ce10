"""perturbative: perturbation theory of neural-network training.

Two questions, one package:

* What does the order of training examples do? Example x is the vector field
  ``v_x = -grad L_x``; the Lie bracket ``[v_x, v_y] = H_y g_x - H_x g_y`` is the leading
  (``lr^2``) difference between training on x then y and on y then x.
* How do we train toward a perturbed distribution ``p'(x) ~ p(x) exp(-dH(x))``? Weight each
  sample's loss by ``exp(-dH(x))`` and keep each batch's summed weight near a constant.

Every function takes ``(model, loss_fn, params: dict[str, Tensor], data)``; see
:mod:`perturbative._core.calls` for the conventions. The folders are the design:
``brackets`` (the order of examples) and ``tilt`` (tilted training) are the math, ``pipeline``
trains, checkpoints and sweeps a run into files, ``report`` renders them, ``cli`` drives it all
(``docs/architecture.md``).
"""

from perturbative._core.engines import ForwardADUnsupportedError
from perturbative._core.errors import InputError
from perturbative._core.extras import MissingExtraError
from perturbative.brackets import (
    BracketTerms,
    Expansion,
    FreshOptimizerWarning,
    Observable,
    OrderPrediction,
    OrderSampler,
    PhasePrediction,
    PhaseTournament,
    PieceMismatchError,
    SwapCheck,
    SwapPrediction,
    TrainingStep,
    adam_preconditioner,
    best_order,
    bracket,
    bracket_matrix,
    bracket_terms,
    cancellation_ratio,
    hvp,
    layer_norms,
    layer_rms,
    mean_gradient,
    on_pieces,
    order_scores,
    order_sensitivity,
    output_shift,
    pair_indices,
    per_example_gradients,
    per_example_hvps,
    phase_tournament,
    predict_exchange,
    predict_order,
    predict_phase_order,
    predict_swap,
    projected_bracket_matrix,
    record_pieces,
    swap_check,
    third_derivative,
    upper_pairs,
    vector_norm,
    vector_rms,
)
from perturbative.pipeline import (
    OrderCheckOptions,
    PhaseCheckOptions,
    Recorder,
    SweepData,
    SweepSettings,
    Task,
    bracket_sweep,
    load_results,
    load_task,
    phase_check,
)
from perturbative.pipeline.order_check import order_check
from perturbative.report import write_report
from perturbative.tilt import (
    AdjustedBatchSampler,
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

__version__ = "0.2.0"

__all__ = [
    # brackets of training examples
    "bracket",
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
    "third_derivative",
    "record_pieces",
    "on_pieces",
    "PieceMismatchError",
    # effects on predictions
    "output_shift",
    "projected_bracket_matrix",
    "order_sensitivity",
    # order effects on an observable, with the user's own training step
    "TrainingStep",
    "Observable",
    "Expansion",
    "order_scores",
    "predict_swap",
    "predict_exchange",
    "predict_order",
    "best_order",
    "SwapPrediction",
    "OrderPrediction",
    # which data first: the order of training phases
    "predict_phase_order",
    "phase_tournament",
    "PhasePrediction",
    "PhaseTournament",
    "phase_check",
    "PhaseCheckOptions",
    # acting on the predictions: a batch sampler that orders minibatches
    "OrderSampler",
    # summaries and the swap experiment
    "vector_norm",
    "vector_rms",
    "layer_norms",
    "layer_rms",
    "cancellation_ratio",
    "swap_check",
    "SwapCheck",
    # your own run: record any loop, rebuild it from its folder, check its order predictions
    "Task",
    "load_task",
    "Recorder",
    "order_check",
    "OrderCheckOptions",
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
    # errors and warnings
    "FreshOptimizerWarning",
    "InputError",
    "MissingExtraError",
]
