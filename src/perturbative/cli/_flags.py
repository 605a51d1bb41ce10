"""The one way a config dataclass becomes command-line flags.

Each flag is a field of a config dataclass: its name (``--batch-size`` for ``batch_size``), its
type and default come from the field, and its help from the first sentence of the field's entry
in the class docstring's ``Attributes:`` section, so the API reference and ``--help`` say the
same thing. Tuples are written comma-separated (``--horizons 0,1,5``).
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from perturbative._core.engines import ENGINES
from perturbative._core.errors import InputError
from perturbative.pipeline.config import PRECONDITIONERS, SweepOptions, TrainConfig

# TrainConfig fields settable from the command line; their defaults are None, so a flag given
# overrides the base config (the reference or the demo) and nothing else.
TRAIN_FIELDS = (
    "run_dir",
    "steps",
    "batch_size",
    "lr",
    "image_size",
    "depth",
    "width",
    "checkpoint_every",
    "eval_every",
    "limit",
    "seed",
    "tilt",
    "device",
)
SWEEP_FIELDS = (
    "bracket_examples",
    "test_examples",
    "ranking_examples",
    "preconditioner",
    "engine",
    "save_brackets",
    "ranking_window",
)
CHOICES = {"preconditioner": PRECONDITIONERS, "engine": ENGINES}


def field_help(cls: type) -> dict[str, str]:
    """The first sentence of each entry of ``cls``'s ``Attributes:`` docstring section."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    entries: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        match = re.match(r"^    (\w+)(?: \([^)]*\))?: (.*)$", line)
        if match:
            name = match.group(1)
            entries[name] = match.group(2)
        elif name and line.startswith("        "):
            entries[name] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return {k: _first_sentence(v) for k, v in entries.items()}


def _first_sentence(text: str) -> str:
    text = text.replace("``", "").replace("`", "")
    for short in ("e.g.", "i.e."):
        text = text.replace(short, short.replace(".", "\0"))
    match = re.match(r"^(.*?[.;])(\s|$)", text)
    return (match.group(1) if match else text).rstrip(".;").replace("\0", ".")


def _kind(hint: Any) -> tuple[type, bool]:
    """``(element type, is a tuple)`` of a field's type hint (``X | None`` reads as ``X``)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def shown_default(value: Any) -> str:
    return (
        ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        if isinstance(value, tuple)
        else str(value)
    )


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    names: typing.Iterable[str] | None = None,
    *,
    overrides: bool = False,
    default_text: typing.Callable[[str], str] | None = None,
) -> None:
    """A flag for each field of ``cls`` in ``names`` (default: every documented field).

    Args:
        overrides: flags default to ``None`` (a given flag overrides a base config) instead of
            the field's default.
        default_text: what ``--help`` shows as a field's default (default: the field's own).
    """
    helps, hints = field_help(cls), typing.get_type_hints(cls)
    wanted = set(helps if names is None else names)
    for f in fields(cls):
        if f.name not in wanted:
            continue
        kind, is_tuple = _kind(hints[f.name])
        default = None if f.default is MISSING else f.default
        shown = default_text(f.name) if default_text else shown_default(default)
        text = helps.get(f.name, f.name.replace("_", " "))
        if "(default:" not in text:  # a field whose help says its default in words keeps it
            text += f" (default: {shown})"
        text = text.replace("%", "%%")  # argparse formats help with %
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action="store_true", help=text)
            continue
        parser.add_argument(
            flag,
            dest=f.name,
            type=str if is_tuple else (Path if kind is Path else kind),
            choices=CHOICES.get(f.name) if not is_tuple else None,
            default=None if overrides else (shown_default(default) if is_tuple else default),
            help=text,
        )


def read_config_flags(
    args: argparse.Namespace, cls: type, names: typing.Iterable[str] | None = None
) -> dict[str, Any]:
    """The values of ``cls``'s flags that were given (``None`` left out), tuples split.

    Raises:
        InputError: a comma-separated value that does not read as the field's type.
    """
    hints = typing.get_type_hints(cls)
    wanted = set(field_help(cls) if names is None else names)
    values = {}
    for f in fields(cls):
        if f.name not in wanted or getattr(args, f.name, None) is None:
            continue
        value = getattr(args, f.name)
        kind, is_tuple = _kind(hints[f.name])
        if is_tuple:
            try:
                value = tuple(kind(v) for v in str(value).split(",") if v.strip())
            except ValueError:
                flag = "--" + f.name.replace("_", "-")
                raise InputError(
                    f"{flag} {value!r}: write comma-separated {kind.__name__}s, e.g. 1,2,3"
                ) from None
        values[f.name] = value
    return values


def add_threads_flag(parser: argparse.ArgumentParser, default=None) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=default,
        help="torch CPU threads (default: the cores no other job keeps busy, sampled at start, "
        "or OMP_NUM_THREADS when set): threads on busy cores make small models tens of times "
        "slower",
    )


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, TrainConfig, TRAIN_FIELDS, overrides=True)


def add_sweep_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, SweepOptions, SWEEP_FIELDS)


def train_config(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    """``base`` with the training flags that were given."""
    return TrainConfig.from_overrides(base, read_config_flags(args, TrainConfig, TRAIN_FIELDS))


def sweep_options(args: argparse.Namespace, out_dir: str | None = None) -> SweepOptions:
    """The sweep flags as :class:`SweepOptions`."""
    return SweepOptions(**read_config_flags(args, SweepOptions, SWEEP_FIELDS), out_dir=out_dir)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """``--task`` and ``--celeba``: how a check finds what a run folder does not hold."""
    parser.add_argument(
        "--task",
        default=None,
        help="a recorded run's task as module:attribute (default: the one the run names)",
    )
    parser.add_argument(
        "--celeba", default=None, help="where the run's CelebA data is now, if it has moved"
    )
