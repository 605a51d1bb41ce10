"""The pipeline over a training run, the only code that writes files.

``config`` (what a run and a sweep are) -> ``train`` (a run folder of checkpoints and metrics,
written through ``checkpoints``) -> ``sweep`` (brackets at every checkpoint, written through
``results``) -> the report (:mod:`perturbative.report`) reads ``results`` and renders it.
``run`` sweeps a training run made by ``train``.
"""

from perturbative.pipeline.config import SweepOptions as SweepOptions
from perturbative.pipeline.config import SweepSettings as SweepSettings
from perturbative.pipeline.config import TrainConfig as TrainConfig
from perturbative.pipeline.results import load_results as load_results
from perturbative.pipeline.run import sweep_training_run as sweep_training_run
from perturbative.pipeline.sweep import SweepData as SweepData
from perturbative.pipeline.sweep import bracket_sweep as bracket_sweep
