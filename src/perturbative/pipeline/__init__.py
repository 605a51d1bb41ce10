"""The pipeline over a training run, the only code that writes files.

``config`` (what a run and a sweep are) -> ``train`` (a run folder of checkpoints and metrics,
written through ``checkpoints``) -> ``sweep`` (brackets at every checkpoint, written through
``results``) -> the report (:mod:`perturbative.report`) reads ``results`` and renders it.
``recorder`` records any training loop into a run folder (``train`` records its own, and ``run``
makes such a run a task), ``task`` says how to rebuild it, ``run_sweep.sweep_run`` sweeps any
run's checkpoints, ``order_check.order_check``
checks order predictions on any run against really reordering it, and ``phase_check`` the order
of whole training phases (which data first) against really training them.
"""

from perturbative.pipeline.config import OrderCheckOptions as OrderCheckOptions
from perturbative.pipeline.config import SweepOptions as SweepOptions
from perturbative.pipeline.config import SweepSettings as SweepSettings
from perturbative.pipeline.config import TrainConfig as TrainConfig
from perturbative.pipeline.phase_order import PhaseCheckOptions as PhaseCheckOptions
from perturbative.pipeline.phase_order import phase_check as phase_check
from perturbative.pipeline.recorder import Recorder as Recorder
from perturbative.pipeline.results import load_results as load_results
from perturbative.pipeline.run import training_task as training_task
from perturbative.pipeline.run_sweep import sweep_run as sweep_run
from perturbative.pipeline.sweep import SweepData as SweepData
from perturbative.pipeline.sweep import bracket_sweep as bracket_sweep
from perturbative.pipeline.task import Task as Task
from perturbative.pipeline.task import load_task as load_task
