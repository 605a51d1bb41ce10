"""What the analysis needs from the user's world to rebuild a run: a :class:`Task`.

A recorded run folder holds weights, optimizer states and the order the examples were trained
in; it does not hold code. The task says how to rebuild the rest in a new process: the model's
architecture (weights come from the checkpoints), the per-example loss, the training and
held-out examples by index, and the observable. A run folder names its task as an importable
``"module:attribute"``, which :func:`load_task` imports.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core.calls import LossFn
from perturbative._core.errors import InputError
from perturbative.brackets import Observable

EXAMPLE_VIEWS = ("index", "image", "text")


def default_collate(examples: Sequence[Any]) -> Any:
    """Examples -> one batch: tuples of tensors stacked per position, mappings of tensors per
    key (a keyword batch), single tensors stacked."""
    if not examples:
        raise InputError("no examples to collate: ask for at least one index")
    first = examples[0]
    if isinstance(first, Mapping):
        return {k: torch.stack([torch.as_tensor(e[k]) for e in examples]) for k in first}
    if isinstance(first, (tuple, list)):
        return tuple(
            torch.stack([torch.as_tensor(e[i]) for e in examples]) for i in range(len(first))
        )
    return (torch.stack([torch.as_tensor(e) for e in examples]),)


@dataclass(frozen=True)
class Task:
    """How to rebuild a training run for analysis, from its folder alone.

    Attributes:
        model: a factory ``() -> nn.Module`` of the architecture (the weights come from the
            run's checkpoints).
        loss_fn: the per-example loss, ``loss_fn(outputs, *targets) -> scalar`` for a batch of
            one example (or ``loss_fn(outputs, batch)`` for keyword batches).
        train: the training examples, indexable by the indices the run logged (a
            ``torch.utils.data.Dataset``, a list, ...); each example is a tuple of tensors
            ``(input, *targets)`` or a mapping of the model's keyword arguments.
        heldout: held-out examples, indexed the same way; the default observable is their mean
            loss.
        collate: examples -> a batch (default :func:`default_collate`).
        observable: ``(task, model) -> Observable``; default the mean loss of the first
            ``heldout_examples`` held-out examples.
        heldout_examples: how many held-out examples the default observable averages.
        output_names: names of the model's outputs, for the report (optional).
        examples_view: how the report shows an example: "index", "image" or "text".
        describe: ``example -> str``, a text snippet of an example (with ``examples_view="text"``).
        measure: ``(outputs, *targets) -> (T, K)``, what of a batch's outputs the report shows
            and pushes the brackets to, called like the loss (default: the outputs themselves).
            For a language model, each target token's log-probability (not a vocabulary-wide
            row of logits per token).
        tokens: ``example -> K strings``, the token behind each column of ``measure`` (the
            report's text view colours each by how much its value moves).
        sources: named sets of training examples (indices into ``train``): a class, a domain,
            an attribute; ``perturbative phase-check`` orders phases drawn from them.
        heldout_sources: the held-out examples of some sources (indices into ``heldout``); the
            phase check's second target is the loss of one of them.
        batches_after: ``(step, count) -> count lists of indices``, the batches the loop trains
            after checkpoint ``step``, as far as checks need them past the end of the order
            log (a loop whose sampler can be rewound: ``perturbative train``'s); without it a
            check that trains past the log draws random batches of the run's size.
    """

    model: Callable[[], nn.Module]
    loss_fn: LossFn
    train: Any
    heldout: Any = None
    collate: Callable[[Sequence[Any]], Any] = default_collate
    observable: Callable[[Task, nn.Module], Observable] | None = None
    heldout_examples: int = 64
    output_names: tuple[str, ...] = ()
    examples_view: str = "index"
    describe: Callable[[Any], str] | None = field(default=None, repr=False)
    measure: Callable[..., Tensor] | None = field(default=None, repr=False)
    tokens: Callable[[Any], list[str]] | None = field(default=None, repr=False)
    sources: Mapping[str, Sequence[int]] | None = field(default=None, repr=False)
    heldout_sources: Mapping[str, Sequence[int]] | None = field(default=None, repr=False)
    batches_after: Callable[[int, int], list[list[int]]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not callable(self.model):
            raise TypeError("Task.model must be a factory () -> nn.Module, not a module")
        if self.examples_view not in EXAMPLE_VIEWS:
            raise ValueError(
                f"Task.examples_view must be one of {EXAMPLE_VIEWS}, not {self.examples_view!r}"
            )

    def batch(self, indices: Sequence[int], split: str = "train") -> Any:
        """The examples at ``indices`` of ``split`` ("train" or "heldout"), collated.

        Raises:
            InputError: an index outside the split, or a split the task does not have.
        """
        examples = self.train if split == "train" else self.heldout
        if examples is None:
            raise InputError(f"the task has no {split!r} examples")
        size = len(examples)
        bad = [int(i) for i in indices if not 0 <= int(i) < size]
        if bad:
            raise InputError(
                f"indices {bad[:5]} are outside the task's {split} set of {size} examples: the "
                "run logged indices of another dataset, or the task's data changed"
            )
        return self.collate([examples[int(i)] for i in indices])

    def build_observable(self, model: nn.Module) -> Observable:
        """The task's observable: its own, or the mean loss of the first held-out examples."""
        if self.observable is not None:
            return self.observable(self, model)
        if self.heldout is None:
            raise InputError(
                "the task has neither held-out examples nor an observable: give Task(heldout=...) "
                "or Task(observable=...)"
            )
        count = min(self.heldout_examples, len(self.heldout))
        first = next(model.parameters())
        return Observable.mean_loss(
            self.loss_fn,
            as_dtype(_as_data(self.batch(range(count), "heldout")), first.dtype, first.device),
            f"mean loss of {count} held-out examples",
        )


def as_dtype(batch: Any, dtype: torch.dtype, device: torch.device | str | None = None) -> Any:
    """A collated batch (a tuple or a keyword mapping, either holding the other) with its
    floating tensors cast to ``dtype`` (the model's), and every tensor moved to ``device``
    where one is given."""

    def cast(t: Any) -> Any:
        if isinstance(t, Mapping | tuple):
            return as_dtype(t, dtype, device)
        if not isinstance(t, Tensor):
            return t
        return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

    if isinstance(batch, Mapping):
        return {k: cast(v) for k, v in batch.items()}
    return tuple(cast(t) for t in batch)


def packed(batch: Any) -> tuple:
    """A collated batch as a loss takes it unpacked: a tuple of tensors, or ``(keyword batch,)``."""
    return batch if isinstance(batch, tuple) else (batch,)


def _takes_an_argument(factory: Callable) -> bool:
    """Whether ``factory`` has a positional parameter without a default (the run folder)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in kinds and p.default is inspect.Parameter.empty for p in parameters)


def _as_data(batch: Any) -> Any:
    return batch if isinstance(batch, (Mapping, tuple)) else (batch,)


def load_task(
    spec: str, search: str | Path | None = None, run_dir: str | Path | None = None
) -> Task:
    """Import the task named ``"module:attribute"``: a :class:`Task`, or a function returning
    one, of no arguments or of the run folder (``run_dir``: a task that reads its run's own
    config, as ``perturbative train``'s does).

    Args:
        spec: ``"package.module:name"``, or ``"path/to/file.py:name"``.
        search: a folder to put on ``sys.path`` first (the run folder's parent, where a script
            that recorded the run may live).
        run_dir: the run folder a factory of one argument is given.

    Raises:
        InputError: the spec is malformed, the module cannot be imported or has no such
            attribute, or it is not a task; the message says what was tried.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise InputError(
            f"task {spec!r} is not of the form 'module:attribute' (e.g. 'my_project.tasks:task' "
            "or 'train.py:task')"
        )
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            loader = importlib.machinery.SourceFileLoader(
                f"_perturbative_task_{path.stem}", str(path)
            )
            spec_ = importlib.util.spec_from_loader(loader.name, loader)
            module = importlib.util.module_from_spec(spec_)
            sys.modules[loader.name] = module
            loader.exec_module(module)
        else:
            if search is not None and str(search) not in sys.path:
                sys.path.insert(0, str(search))
            module = importlib.import_module(module_name)
    except (ImportError, FileNotFoundError) as error:
        raise InputError(
            f"cannot import the task's module {module_name!r} ({type(error).__name__}: {error}); "
            "tried sys.path (and the current folder): install the package that defines it, run "
            "from its folder, or pass --task with a path 'file.py:name'"
        ) from error
    if not hasattr(module, attribute):
        raise InputError(f"module {module_name!r} has no attribute {attribute!r} (task {spec!r})")
    task = getattr(module, attribute)
    if not isinstance(task, Task) and callable(task):
        task = task(run_dir) if run_dir is not None and _takes_an_argument(task) else task()
    if not isinstance(task, Task):
        raise InputError(
            f"{spec} is a {type(task).__name__}, not a perturbative Task (or a function returning "
            "one)"
        )
    return task
