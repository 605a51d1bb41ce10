"""The private core every other package builds on: nothing here is public API.

* :mod:`~perturbative._core.checks`: argument checks (params, data, BatchNorm mode, finiteness);
* :mod:`~perturbative._core.calls`: a module and a loss bound into pure functions of the
  parameters (``functional_call``), the call shape ``(model, loss_fn, params, data)``;
* :mod:`~perturbative._core.engines`: which engine runs, and the forward-mode fallback;
* :mod:`~perturbative._core.io`: atomic file writes;
* :mod:`~perturbative._core.epochs`: a batch sampler's epoch and position, and when an
  iteration starts the next epoch;
* :mod:`~perturbative._core.errors`: the error type of bad user input.
"""
