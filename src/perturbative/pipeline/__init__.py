"""The pipeline over a training run, the only code that writes files.

``config`` (what a run and a sweep are) -> ``train`` (a run folder of checkpoints and metrics,
written through ``checkpoints``) -> ``sweep`` (brackets at every checkpoint, written through
``results``) -> the report (:mod:`perturbative.report`) reads ``results`` and renders it.
``run`` sweeps a training run made by ``train``. ``recorder`` records any other training loop
into a run folder, ``task`` says how to rebuild it, and ``recorded`` checks order predictions on
it against really reordering it; ``phase_check`` checks the order of whole training phases
(which data first) against really training them.
"""

from perturbative.pipeline.config import SweepOptions as SweepOptions
from perturbative.pipeline.config import SweepSettings as SweepSettings
from perturbative.pipeline.config import TrainConfig as TrainConfig
from perturbative.pipeline.phase_order import PhaseCheckOptions as PhaseCheckOptions
from perturbative.pipeline.phase_order import phase_check as phase_check
from perturbative.pipeline.recorded import RecordedCheckOptions as RecordedCheckOptions
from perturbative.pipeline.recorded import check_recorded_run as check_recorded_run
from perturbative.pipeline.recorder import Recorder as Recorder
from perturbative.pipeline.results import load_results as load_results
from perturbative.pipeline.run import sweep_training_run as sweep_training_run
from perturbative.pipeline.run import training_task as training_task
from perturbative.pipeline.sweep import SweepData as SweepData
from perturbative.pipeline.sweep import bracket_sweep as bracket_sweep
from perturbative.pipeline.task import Task as Task
from perturbative.pipeline.task import load_task as load_task
