"""Tilted training: steering a model of ``p(x) ~ exp(-H(x))`` to ``p'(x) ~ exp(-H(x) - dH(x))``.

Each example's loss is weighted by ``w(x) = exp(-dH(x)) / Z`` (mean 1 over the data), and an
adaptive batch sampler keeps each batch's summed weight, its adjusted batch size, near a target.

* ``_weights``: the weights, the weighted batch loss and the first-order prediction;
* ``_diagnostics``: effective sample size, largest weight share, :class:`TiltWarning`;
* ``_sampler``: :class:`AdjustedBatchSampler`.
"""

from perturbative.tilt._diagnostics import MAX_WEIGHT_SHARE as MAX_WEIGHT_SHARE
from perturbative.tilt._diagnostics import MIN_ESS_FRACTION as MIN_ESS_FRACTION
from perturbative.tilt._diagnostics import TiltDiagnostics as TiltDiagnostics
from perturbative.tilt._diagnostics import TiltWarning as TiltWarning
from perturbative.tilt._diagnostics import check_tilt as check_tilt
from perturbative.tilt._diagnostics import effective_sample_size as effective_sample_size
from perturbative.tilt._diagnostics import max_weight_share as max_weight_share
from perturbative.tilt._sampler import OVERSIZE_POLICIES as OVERSIZE_POLICIES
from perturbative.tilt._sampler import AdjustedBatchSampler as AdjustedBatchSampler
from perturbative.tilt._sampler import adjusted_batch_ends as adjusted_batch_ends
from perturbative.tilt._weights import first_order_shift as first_order_shift
from perturbative.tilt._weights import log_tilt_weights as log_tilt_weights
from perturbative.tilt._weights import tilt_weights as tilt_weights
from perturbative.tilt._weights import weighted_loss as weighted_loss
