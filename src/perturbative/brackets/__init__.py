"""The order of training examples: fields, Hessian-vector products, Lie brackets, their effects.

Example ``x`` is the field ``v_x = -grad L_x = -g_x``; the Lie bracket
``[v_x, v_y] = H_y g_x - H_x g_y`` is the leading (``lr^2``) difference between training on x
then y and on y then x. One module per object:

* ``_gradients``: per-example gradients and minibatch gradients (the fields);
* ``_hvp``: Hessian-vector products, one factory for both engines, and third derivatives;
* ``_bracket``: the bracket of two examples or minibatches, and of all pairs;
* ``_expansion``: how an order prediction expands each gradient (:class:`Expansion`);
* ``_step``: the user's training step as one value (optimizer, clipping, lr schedule);
* ``_optimizers``: the one reader of a ``torch.optim`` optimizer, and its update as a function;
* ``_preconditioners``: Adam's diagonal preconditioner from its state;
* ``_output_shifts``: what a bracket does to the model's outputs and to a scalar observable;
* ``_norms``: norms, per-tensor RMS and the cancellation ratio;
* ``_swap``: the real two-step swap experiment with any optimizer;
* ``_observable``: the scalar observable ``O`` the predictions measure;
* ``_predictions``: what the order does to an observable: predictions and best orders;
* ``_scores``: order scores of single examples, plain and with the run's optimizer;
* ``_phases``: the order of two training phases, and a tournament of sources;
* ``_anchored``: the real tournament of phases, and one from each source trained before and
  after one anchor phase;
* ``_ordering``: a batch sampler that orders minibatches by the predictions;
* ``_pieces``: the smooth piece (pooling winners, ReLU signs) of a network a point lies on.
"""

from perturbative._core.engines import ForwardADUnsupportedError as ForwardADUnsupportedError
from perturbative.brackets._anchored import anchored_tournaments as anchored_tournaments
from perturbative.brackets._anchored import trained_tournaments as trained_tournaments
from perturbative.brackets._bracket import BracketTerms as BracketTerms
from perturbative.brackets._bracket import bracket as bracket
from perturbative.brackets._bracket import bracket_matrix as bracket_matrix
from perturbative.brackets._bracket import bracket_terms as bracket_terms
from perturbative.brackets._bracket import pair_indices as pair_indices
from perturbative.brackets._bracket import pairs_per_chunk as pairs_per_chunk
from perturbative.brackets._bracket import upper_pairs as upper_pairs
from perturbative.brackets._expansion import Expansion as Expansion
from perturbative.brackets._gradients import mean_gradient as mean_gradient
from perturbative.brackets._gradients import per_example_gradients as per_example_gradients
from perturbative.brackets._hvp import hvp as hvp
from perturbative.brackets._hvp import per_example_hvps as per_example_hvps
from perturbative.brackets._hvp import third_derivative as third_derivative
from perturbative.brackets._norms import cancellation_ratio as cancellation_ratio
from perturbative.brackets._norms import layer_norms as layer_norms
from perturbative.brackets._norms import layer_rms as layer_rms
from perturbative.brackets._norms import layer_squared_norms as layer_squared_norms
from perturbative.brackets._norms import vector_norm as vector_norm
from perturbative.brackets._norms import vector_rms as vector_rms
from perturbative.brackets._observable import Observable as Observable
from perturbative.brackets._optimizers import UPDATE_RULES as UPDATE_RULES
from perturbative.brackets._ordering import ORDER_POLICIES as ORDER_POLICIES
from perturbative.brackets._ordering import OrderSampler as OrderSampler
from perturbative.brackets._ordering import batch_alignments as batch_alignments
from perturbative.brackets._ordering import optimizer_batch_scores as optimizer_batch_scores
from perturbative.brackets._output_shifts import order_sensitivity as order_sensitivity
from perturbative.brackets._output_shifts import output_shift as output_shift
from perturbative.brackets._output_shifts import (
    projected_bracket_matrix as projected_bracket_matrix,
)
from perturbative.brackets._phases import PhasePrediction as PhasePrediction
from perturbative.brackets._phases import PhaseTournament as PhaseTournament
from perturbative.brackets._phases import bracket_tournament as bracket_tournament
from perturbative.brackets._phases import bracket_tournaments as bracket_tournaments
from perturbative.brackets._phases import kendall_tau as kendall_tau
from perturbative.brackets._phases import phase_tournament as phase_tournament
from perturbative.brackets._phases import phase_tournaments as phase_tournaments
from perturbative.brackets._phases import predict_phase_order as predict_phase_order
from perturbative.brackets._phases import predict_phase_orders as predict_phase_orders
from perturbative.brackets._pieces import PieceMismatchError as PieceMismatchError
from perturbative.brackets._pieces import Selection as Selection
from perturbative.brackets._pieces import on_pieces as on_pieces
from perturbative.brackets._pieces import record_pieces as record_pieces
from perturbative.brackets._preconditioners import adam_preconditioner as adam_preconditioner
from perturbative.brackets._predictions import FreshOptimizerWarning as FreshOptimizerWarning
from perturbative.brackets._predictions import OrderPrediction as OrderPrediction
from perturbative.brackets._predictions import SwapPrediction as SwapPrediction
from perturbative.brackets._predictions import best_order as best_order
from perturbative.brackets._predictions import exchanged as exchanged
from perturbative.brackets._predictions import predict_exchange as predict_exchange
from perturbative.brackets._predictions import predict_order as predict_order
from perturbative.brackets._predictions import predict_swap as predict_swap
from perturbative.brackets._scores import OptimizerOrderScores as OptimizerOrderScores
from perturbative.brackets._scores import moved_first_or_last as moved_first_or_last
from perturbative.brackets._scores import optimizer_order_scores as optimizer_order_scores
from perturbative.brackets._scores import order_scores as order_scores
from perturbative.brackets._step import TrainingStep as TrainingStep
from perturbative.brackets._swap import SwapCheck as SwapCheck
from perturbative.brackets._swap import parameters_after_steps as parameters_after_steps
from perturbative.brackets._swap import swap_check as swap_check
from perturbative.brackets._swap import values_after_each as values_after_each
from perturbative.brackets._swap import values_along_steps as values_along_steps
