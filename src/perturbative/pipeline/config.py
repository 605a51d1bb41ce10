"""What a run is: the configuration dataclasses of training and of the bracket sweep.

Every default lives here once, with the reason for its value; the command line reads its flags'
defaults from these classes. Unknown keys and values of the wrong type are an
:class:`~perturbative._core.errors.InputError` that names the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from perturbative._core.engines import ENGINES
from perturbative._core.errors import InputError
from perturbative.brackets import Expansion

DATASETS = ("digits", "celeba")
# fields that may differ between a run and its resumption: more (or fewer) steps, another device,
# and where things are (a moved run folder, moved data; the sampler's state still checks that the
# training set has the same size and weights)
RESUMABLE_CHANGES = ("steps", "device", "run_dir", "data_root")


@dataclass
class TrainConfig:
    """Everything that determines a training run; the defaults are the reference experiment.

    Use :meth:`reference` for CelebA, :meth:`demo` for the fast offline default, and
    :meth:`from_overrides` to apply command-line flags (unknown keys are an error).

    Attributes:
        dataset: "celeba" (the reference experiment) or "digits" (scikit-learn's embedded digits).
        data_root: folder in CelebA's on-disk layout; required for "celeba", unused for "digits".
        image_size: square image side in pixels; 64 keeps a 5000-step MXResNet-18 run within an
            hour on a CPU and is the original size.
        heldout_fraction: share held out where the official partitions leave one side empty (as
            in a subset).
        split_seed: seed of the held-out split, its own so that runs with different seeds share
            one split.
        limit: load only the first N CelebA images (quick trials); None loads all.
        depth: MXResNet depth, 18, 34 or 50; 18 is the original experiment's model.
        width: MXResNet channel multiplier; 1.0 is the original MXResNet.
        lr: Adam learning rate; 5e-3 as in the original experiment, with betas (0.8, 0.999).
        beta1: Adam's first beta.
        beta2: Adam's second beta.
        batch_size: examples per step (tilted: target summed weight); 32 as in the original.
        steps: optimizer steps; 5000 is about 18 epochs of a 9,000-image training set.
        checkpoint_every: steps between checkpoints; 21 checkpoints over 5000 steps are enough
            points to see brackets change during training.
        eval_every: steps between held-out evaluations.
        eval_examples: held-out examples evaluated (the first ones); bounds evaluation time.
        seed: seed of weights and batch order.
        tilt: train tilted, e.g. 'Smiling=1.5,Male=-0.5' (weights exp(sum s*y)), i.e.
            ``dH(x) = -sum_a s_a y_a(x)``; None trains untilted.
        device: auto, cpu or cuda; bit-exact determinism is promised on "cpu".
        run_dir: where config, metrics and checkpoints go.
    """

    dataset: str = "celeba"
    data_root: str | None = None
    image_size: int = 64
    heldout_fraction: float = 0.1
    split_seed: int = 0
    limit: int | None = None
    depth: int = 18
    width: float = 1.0
    lr: float = 5e-3
    beta1: float = 0.8
    beta2: float = 0.999
    batch_size: int = 32
    steps: int = 5000
    checkpoint_every: int = 250
    eval_every: int = 250
    eval_examples: int = 1000
    seed: int = 0
    tilt: str | None = None
    device: str = "auto"
    run_dir: str = "runs/celeba"

    def __post_init__(self) -> None:
        _check_types(self)
        if self.dataset not in DATASETS:
            raise InputError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        positive = ("image_size", "batch_size", "checkpoint_every", "eval_every", "eval_examples")
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0:
            raise InputError(f"steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.width > 0):
            raise InputError(
                "need lr > 0, 0 <= beta1, beta2 < 1 and width > 0; got "
                f"lr={self.lr}, beta1={self.beta1}, beta2={self.beta2}, width={self.width}"
            )
        if self.tilt is not None:
            parse_tilt(self.tilt)
        if self.data_root is not None:
            # stored resolved, so the run works from any folder
            self.data_root = str(Path(self.data_root).expanduser().resolve())

    @classmethod
    def reference(cls, celeba_root: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """The reference experiment: MXResNet-18 on CelebA at 64x64, 40 outputs, Adam lr 5e-3
        betas (0.8, 0.999), batch 32, 5000 steps, a checkpoint every 250 steps."""
        base = cls(dataset="celeba", data_root=str(celeba_root), run_dir="runs/celeba")
        return cls.from_overrides(base, overrides)

    @classmethod
    def demo(cls, **overrides: Any) -> TrainConfig:
        """The embedded default: a quarter-width MXResNet-18 on the digits at 32x32.

        600 steps of batch 32 (about 13 epochs of 1,438 training images) fit a CPU's minute or
        two and reach a high held-out accuracy (``docs/results/reference-experiment.md``); a
        checkpoint every 50 steps gives 13 checkpoints, enough to follow the brackets.
        """
        base = cls(
            dataset="digits",
            image_size=32,
            heldout_fraction=0.2,
            width=0.25,
            steps=600,
            checkpoint_every=50,
            eval_every=50,
            run_dir="runs/demo",
        )
        return cls.from_overrides(base, overrides)

    @classmethod
    def from_overrides(cls, base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
        """``base`` with some fields replaced, checked like a fresh config.

        Values are converted from strings where the field's type allows (command-line flags):
        ``"1e-3" -> 0.001`` for floats, ``"none"`` -> ``None`` for optional fields.

        Raises:
            InputError: for a key that is not a field (the message lists the fields) or a value
                of the wrong type.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise InputError(f"unknown TrainConfig keys {unknown}; valid keys: {', '.join(names)}")
        hints = typing.get_type_hints(cls)
        converted = {key: _convert(key, value, hints[key]) for key, value in overrides.items()}
        return dataclasses.replace(base, **converted)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict (e.g. ``config.json``); unknown keys are an error."""
        return cls.from_overrides(cls(), values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _allowed_types(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for arg in typing.get_args(hint) for t in _allowed_types(arg))
    return (type(None),) if hint is type(None) else (hint,)


def _convert(key: str, value: Any, hint: Any) -> Any:
    allowed = _allowed_types(hint)
    if isinstance(value, str) and str not in allowed:
        text = value.strip()
        if text.lower() in ("none", "null", "") and type(None) in allowed:
            return None
        for kind in (bool, int, float):
            if kind in allowed:
                try:
                    if kind is bool:
                        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                            continue
                        return text.lower() in ("true", "1", "yes")
                    return kind(text)
                except ValueError:
                    continue
        raise InputError(
            f"{key}={value!r} cannot be read as {' or '.join(t.__name__ for t in allowed)}"
        )
    if isinstance(value, int) and not isinstance(value, bool) and float in allowed:
        if int not in allowed:
            return float(value)
    return value


def _check_types(config: TrainConfig) -> None:
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        allowed = _allowed_types(hints[f.name])
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            setattr(config, f.name, float(value))
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            names = " or ".join(t.__name__ for t in allowed)
            raise InputError(f"TrainConfig.{f.name} must be {names}, got {value!r}")


def parse_tilt(spec: str, attribute_names: list[str] | None = None) -> dict[str, float]:
    """Parse ``"Smiling=1.5,Male=-0.5"`` into ``{"Smiling": 1.5, "Male": -0.5}``.

    A positive strength weights examples *with* the attribute up: ``dH(x) = -sum_a s_a y_a(x)``
    and ``w(x) = exp(-dH(x)) / Z``.

    Raises:
        InputError: for a malformed spec, or (given ``attribute_names``) an unknown attribute,
            listing the valid names.
    """
    strengths: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            strength = float(value)
        except ValueError:
            strength = math.nan
        if not sep or not name.strip() or not math.isfinite(strength):
            raise InputError(
                f"cannot read tilt {part.strip()!r} in {spec!r}: write ATTRIBUTE=STRENGTH, "
                "comma-separated, e.g. 'Smiling=1.5,Male=-0.5'"
            )
        strengths[name.strip()] = strength
    if attribute_names is not None:
        unknown = [name for name in strengths if name not in attribute_names]
        if unknown:
            raise InputError(
                f"tilt names unknown attribute(s) {unknown}; valid names: "
                + ", ".join(attribute_names)
            )
    return strengths


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; any other name as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def is_training_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` was made by ``perturbative train``: it holds the run's
    ``config.json``, and a ``run.json`` that says so (a run made before 0.4 has none; a
    user's recorded run may hold a ``config.json`` of its own)."""
    folder = Path(run_dir)
    if not (folder / "config.json").is_file():
        return False
    if not (folder / "run.json").is_file():
        return True
    try:
        loop = json.loads((folder / "run.json").read_text()).get("loop") or {}
    except (OSError, ValueError, AttributeError):
        return True  # the run's own reader names what is wrong with it
    return loop.get("made_by") == "perturbative train"


def load_run_config(
    run_dir: str | os.PathLike, data_root: str | os.PathLike | None = None
) -> TrainConfig:
    """The config of an existing run (its ``config.json``), e.g. to resume it.

    Args:
        run_dir: the run's folder, wherever it is now (the returned ``run_dir`` is this one).
        data_root: where the run's CelebA data is now, if it moved (``--celeba``).
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        recorded = (Path(run_dir) / "run.json").is_file()
        raise FileNotFoundError(
            f"{run_dir} is a recorded run (run.json), not a run of `perturbative train`: this "
            "command needs a run of `perturbative train`"
            if recorded
            else f"{run_dir} holds no run: neither a run of `perturbative train` (config.json) "
            "nor a run recorded by perturbative.Recorder (run.json); check the path"
        )
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}); restore it or train anew") from error
    config = TrainConfig.from_dict(values)
    moved = {"run_dir": str(run_dir)}
    if data_root is not None:
        moved["data_root"] = str(data_root)
    return TrainConfig.from_overrides(config, moved)


@dataclass
class SweepSettings:
    """What a sweep computes; stored in ``meta.json`` so a resumed sweep can check it matches.

    Attributes:
        lr: learning rate in the shift ``lr^2 J [v_i, v_j]`` (the run's lr).
        bracket_examples: ``B``; 6 gives the 15 brackets of the original experiment.
        dataset: a name for the report.
        observable: what the ranking's observable is, in words.
        preconditioner: ``"none"`` (plain SGD fields, as in the original experiment) or
            ``"adam"`` (fields ``-P g`` with ``P`` from each checkpoint's Adam state).
        engine: bracket engine (``"auto"`` picks by device).
        save_brackets: also save the full bracket tensors (each is the size of a checkpoint).
    """

    lr: float
    bracket_examples: int = 6
    dataset: str = "custom"
    observable: str = "held-out mean loss of the test batch"
    preconditioner: str = "none"
    engine: str = "auto"
    save_brackets: bool = False

    def __post_init__(self) -> None:
        # 0 is a checkpoint's own lr at the start of a warm-up from 0: its shifts are 0
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise InputError(f"lr must be a finite number >= 0, got {self.lr!r}")
        _check_sweep_choices(self)


_SETTINGS_DEFAULTS = {f.name: f.default for f in fields(SweepSettings)}
PRECONDITIONERS = ("none", "adam")


def _check_sweep_choices(options: SweepSettings | SweepOptions) -> None:
    if options.preconditioner not in PRECONDITIONERS:
        raise InputError(
            f"preconditioner must be one of {PRECONDITIONERS}, not {options.preconditioner!r}"
        )
    if options.engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, not {options.engine!r}")
    if options.bracket_examples < 2:
        raise InputError(f"bracket_examples must be at least 2, got {options.bracket_examples}")


@dataclass
class SweepOptions:
    """How to sweep a training run; each default with its reason.

    Attributes:
        bracket_examples: 6 held-out examples -> 15 brackets, the original experiment's grid.
        test_examples: 32 held-out examples (one batch) whose outputs the brackets move.
        ranking_examples: 256 training examples ranked by their order score: enough to show a
            spread in under half a minute per checkpoint of the full-width model on a CPU. Memory
            does not grow with the pool, so the whole training split works too, at about the
            same cost per example (``benchmarks/order_scores.py``).
        preconditioner: "none" brackets the plain gradient fields, as the original experiment
            did; "adam" uses each checkpoint's Adam preconditioner (step 0 has no Adam state and
            is skipped).
        engine: bracket engine; "auto" picks by device.
        save_brackets: also store the full bracket tensors (each the size of a checkpoint).
        seed: picks the test batch and the ranking pool, deterministically.
        out_dir: results directory; default ``<run>/brackets``.
        only_steps: sweep only the checkpoints of these steps (default: every checkpoint), e.g.
            to rank the whole training split at a few of them into a second results directory.
        ranking_window: rank by the order scores with the run's own optimizer and state, an
            example moved between the first and the last of the run's next 4 batches (0: the
            plain bracket scores, cheaper: one gradient and one HVP an example).
        device: where the sweep runs, "cpu" or "cuda" (default: where the run trained when
            that device is here, else the CPU).
    """

    bracket_examples: int = _SETTINGS_DEFAULTS["bracket_examples"]
    test_examples: int = 32
    ranking_examples: int = 256
    preconditioner: str = _SETTINGS_DEFAULTS["preconditioner"]
    engine: str = _SETTINGS_DEFAULTS["engine"]
    save_brackets: bool = _SETTINGS_DEFAULTS["save_brackets"]
    seed: int = 0
    out_dir: str | None = None
    only_steps: tuple[int, ...] | None = None
    ranking_window: int = 4
    device: str | None = None

    def __post_init__(self) -> None:
        _check_sweep_choices(self)
        if self.ranking_window == 1 or self.ranking_window < 0:
            raise InputError(f"ranking_window must be 0 or at least 2, not {self.ranking_window}")
        if self.only_steps is not None:
            self.only_steps = tuple(int(s) for s in self.only_steps)
            if not self.only_steps:
                raise InputError("only_steps is empty: name at least one checkpoint step")
        if self.test_examples < self.bracket_examples:
            raise InputError(
                f"test_examples={self.test_examples} is fewer than bracket_examples="
                f"{self.bracket_examples}: the bracketed examples are the first of the test batch"
            )
        if self.ranking_examples < 0:
            raise InputError(f"ranking_examples must be >= 0, got {self.ranking_examples}")


#: The window sizes an order check may have: all ``k!`` orders are predicted (``best_order``
#: predicts every order up to 24) and really trained.
WINDOW_SIZES = range(2, 5)


def examples_in_batch(options: Mapping[str, Any]) -> bool:
    """Whether an order check with these options (as ``order_check.json`` saves them) trained
    each single example inside a minibatch (``examples="in-batch"`` under
    ``batchnorm="batch"``) rather than alone in eval mode. Checks saved before the setting
    trained them alone."""
    return options.get("batchnorm") == "batch" and options.get("examples", "alone") == "in-batch"


@dataclass
class OrderCheckOptions:
    """How ``perturbative order-check`` tests order predictions against real reordered training.

    Attributes:
        checkpoints: how many checkpoints of the run, spread from the first after step 0 to the
            last (step 0 has no optimizer state yet); 3 shows early, middle and late training.
        steps: check exactly these checkpoint steps instead (``checkpoints`` is then ignored).
        example_pairs: random pairs of single training examples, swapped; 200 gives a sign
            accuracy to about +-3% (binomial standard error at 90%).
        batch_pairs: random pairs of minibatches of the run's batch size, swapped.
        exchanges: random pairs of examples exchanged between two consecutive minibatches of the
            run's batch size (x in the first and y in the second change places): single
            examples swapped as the run trains them, in minibatches, with batch statistics
            under ``batchnorm="batch"``.
        windows: random windows of each size in ``window_sizes`` whose k! orders are all
            really trained, to check the predicted best order.
        window_sizes: the window sizes ``k`` (2 to 4; 3 and 4 by default).
        horizons: further identical steps (the run's own next batches) after the swap, at which
            the observable is compared; 0 is right after the two swapped steps.
        horizon_pairs: pairs of each kind followed past ``h = 0`` (each horizon step is a real
            step of both orders, the dominant cost).
        horizon_predictions: of those, pairs of each kind whose difference at ``h > 0`` is also
            predicted, by following the run that took the first order and carrying the
            predicted difference along it (one gradient and one HVP per later step; see
            :func:`perturbative.brackets.predict_swap`).
        scaled_pairs: example pairs at each smaller lr scale (half as many minibatch pairs, and
            half the windows); ``h = 0`` only.
        lr_scales: the run's lr times these; the expansion holds better at smaller lr.
        heldout_examples: the observable is the mean loss of this many held-out examples,
            drawn with the seed (default: the task's ``heldout_examples``, 64 for a run of
            ``train``); a task with an observable of its own keeps it.
        batchnorm_examples: training examples whose statistics replace the checkpoint's
            BatchNorm running statistics before the check (0 keeps them). The running
            statistics lag the weights while training moves fast, and an eval-mode network with
            stale statistics is not the one that trained (``docs/orders.md``).
        batchnorm: how minibatches meet BatchNorm. "batch": minibatch pairs and windows are
            predicted and really trained in train mode, each batch normalised by its own
            statistics as in the run, and their observable is the held-out batch's loss with
            its own statistics; "running": everything in eval mode on the recomputed running
            statistics.
        examples: how a single example is trained alone under ``batchnorm="batch"`` (a batch
            of one has no batch statistics). "in-batch": inside a random minibatch of the run's
            batch size whose other examples weigh 0 in the loss, in train mode, so BatchNorm
            normalises it by batch statistics at the current weights, as the run did (the
            example's field is its gradient in that batch; it costs a minibatch's pass);
            "alone": a batch of one in eval mode, on the recomputed running statistics, frozen
            while the steps move the weights. Adam moves every weight by about ``lr`` whatever
            its gradient, and against frozen statistics early in training one such step on one
            example can change the held-out loss many times over, which no expansion in ``lr``
            follows (``benchmarks/example_steps.py`` prints it; ``docs/results/``). Under
            ``batchnorm="running"`` examples are alone.
        expansion: the order to which the predictions expand each gradient along the path
            of the earlier predicted steps: 2 (Hessian) or 3 (adds the third derivative; the
            second-order prediction is then recorded beside it, so one run shows what the
            third-order term buys).
        pieces: "follow": each gradient is expanded on the smooth piece of the network that the
            point it is wanted at lies on (its max-pooling winners and ReLU signs there;
            :func:`perturbative.brackets.on_pieces`), "ignore": on the piece ``theta`` lies on. The
            MXResNet stem's max pool changes winners along every step at the run's lr, and the
            expansion that ignores this errs in proportion to the step.
        dtype: "float64" keeps single-pair effects far above rounding; "float32" where the
            predictions of a large model do not fit in float64 (GPT-2 small). The float32
            rounding floor is measured on `floor_pairs` pairs either way: each really trained
            again in the other precision (only real training runs in float64 then).
        device: where the check runs, "cpu", "cuda" or "cuda:1" (default: where the run
            trained when that device is here, else the CPU). The checkpoint, its optimizer
            state and every batch move there.
        floor_pairs: pairs repeated in the other precision to measure the float32 rounding
            floor, single-example pairs (or the first logged pairs, in a check of logged pairs
            alone).
        logged_pairs: pairs of the run's own logged batches per checkpoint (the two it trained
            next, then random pairs of later ones), trained as its next two steps, at the lrs
            it logged for its next two steps (``h = 0``, the run's lr only).
        scored_examples: training examples per checkpoint whose optimizer-aware order score (the
            example trained in the first rather than the last of the run's next
            ``score_window`` batches) is checked against really training both.
        score_window: the run's batches an example is moved across for the order scores.
        seed: picks pairs, windows, scored and held-out examples.
        out_dir: default ``<run>/order_check``.
        replay_steps: the replay gate replays at most this many of the run's steps to the
            nearest checkpoint (:mod:`perturbative.pipeline.replay`).
        allow_replay_gap: check even where the replay gate fails (the gap is kept in the
            results and shown first in the report).
    """

    checkpoints: int = 3
    steps: tuple[int, ...] = ()
    example_pairs: int = 200
    batch_pairs: int = 100
    exchanges: int = 100
    windows: int = 10
    window_sizes: tuple[int, ...] = (3, 4)
    horizons: tuple[int, ...] = (0, 1, 5, 20)
    horizon_pairs: int = 20
    horizon_predictions: int = 20
    scaled_pairs: int = 40
    lr_scales: tuple[float, ...] = (1.0, 0.1, 0.01)
    heldout_examples: int | None = None
    batchnorm_examples: int = 1024
    batchnorm: str = "batch"
    examples: str = "in-batch"
    expansion: int = 3
    pieces: str = "follow"
    dtype: str = "float64"
    device: str | None = None
    floor_pairs: int = 20
    logged_pairs: int = 20
    scored_examples: int = 0
    score_window: int = 4
    seed: int = 0
    out_dir: str | None = None
    replay_steps: int = 200
    allow_replay_gap: bool = False

    @property
    def expansion_settings(self) -> Expansion:
        """How the check's predictions expand each gradient (``expansion`` and ``pieces``)."""
        return Expansion(order=self.expansion, follow_pieces=self.pieces == "follow")

    def __post_init__(self) -> None:
        self.horizons = tuple(int(h) for h in self.horizons)
        self.steps = tuple(int(s) for s in self.steps)
        self.window_sizes = tuple(int(k) for k in self.window_sizes)
        self.lr_scales = tuple(float(s) for s in self.lr_scales)
        counts = (
            "checkpoints",
            "example_pairs",
            "batch_pairs",
            "exchanges",
            "windows",
            "horizon_predictions",
            "logged_pairs",
            "scored_examples",
            "horizon_pairs",
            "scaled_pairs",
            "floor_pairs",
            "batchnorm_examples",
            "replay_steps",
        )
        for name in counts:
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if any(k not in WINDOW_SIZES for k in self.window_sizes):
            raise InputError(
                f"window_sizes {list(self.window_sizes)}: each k must be 2 to 4 (all k! orders are "
                "really trained)"
            )
        if any(s <= 0 for s in self.steps):
            raise InputError(
                f"steps {list(self.steps)}: step 0 has no optimizer state; name later checkpoints"
            )
        if not self.horizons or min(self.horizons) < 0 or not self.lr_scales:
            raise InputError("need at least one horizon >= 0 and one lr scale")
        if min(self.lr_scales) <= 0:
            raise InputError(f"lr_scales {list(self.lr_scales)}: each must be > 0")
        if (self.logged_pairs or self.scored_examples) and 1.0 not in self.lr_scales:
            raise InputError(
                "logged pairs and scored examples are checked at the run's own lr: keep 1 in "
                "--lr-scales, or set --logged-pairs 0 --scored-examples 0"
            )
        if self.windows and not self.window_sizes:
            raise InputError("windows need at least one window size (--window-sizes 3)")
        if self.batchnorm not in ("batch", "running"):
            raise InputError(f"batchnorm must be 'batch' or 'running', not {self.batchnorm!r}")
        if self.examples not in ("in-batch", "alone"):
            raise InputError(f"examples must be 'in-batch' or 'alone', not {self.examples!r}")
        if self.expansion not in (2, 3):
            raise InputError(f"expansion must be 2 or 3, not {self.expansion!r}")
        if self.heldout_examples is not None and self.heldout_examples < 1:
            raise InputError(f"heldout_examples must be >= 1, got {self.heldout_examples}")
        if self.score_window < 2:
            raise InputError(f"score_window must be at least 2, not {self.score_window}")
        if self.pieces not in ("follow", "ignore"):
            raise InputError(f"pieces must be 'follow' or 'ignore', not {self.pieces!r}")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be float32 or float64, not {self.dtype!r}")
