"""The files of a run, each with ONE writer and ONE reader: the results of a sweep and metrics.

A results directory (``docs/results-format.md``)::

    meta.json                     what was computed, from what, and which steps are done
    step_NNNNNN.safetensors       one file of arrays per checkpoint step
    thumbnails.safetensors        images of the bracketed examples (optional)

and a run's ``metrics.jsonl``: one JSON object per evaluation, and ``order_check/order_check.json``
(:mod:`perturbative.pipeline.order_check`). Every writer is atomic
(:mod:`perturbative._core.io`); every reader checks what it reads and says what to do when a file
is missing, corrupt or of another format version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from perturbative._core.errors import InputError
from perturbative._core.io import (
    append_json_line,
    file_sha256,
    read_json_lines,
    save_tensors,
    step_file,
    write_json,
    write_text,
)
from perturbative.pipeline.order_records import OrderCheckRecord
from perturbative.pipeline.phase_records import PhaseCheckRecord
from perturbative.pipeline.recorded_records import (
    RECORDED_CHECK,
    RecordedCheck,
    read_recorded_check_file,
)

RESULTS_FORMAT_VERSION = 1
META = "meta.json"
THUMBNAILS = "thumbnails.safetensors"
METRICS = "metrics.jsonl"
ORDER_CHECK = "order_check.json"
PHASE_CHECK = "phase_check.json"  # the phase check, in <run>/phase_check
REQUIRED_META = ("format_version", "attribute_names", "steps", "bracket_examples", "pairs")
REQUIRED_STEP = ("output_shift", "outputs", "grad_norm", "bracket_norm")
RERUN = "rerun `perturbative brackets` on the training run (it resumes finished checkpoints)"


def results_dir_of(path: str | os.PathLike) -> Path:
    """The results directory for ``path``: ``path`` itself, or ``path/brackets`` for a run."""
    path = Path(path)
    if not (path / META).exists() and (path / "brackets" / META).exists():
        return path / "brackets"
    return path


def write_step(out_dir: str | os.PathLike, step: int, arrays: dict) -> Path:
    """Write one checkpoint step's arrays (torch tensors) atomically."""
    return save_tensors(step_file(out_dir, step), arrays)


def write_thumbnails(out_dir: str | os.PathLike, images) -> Path:
    """Write the ``(B, C, H, W)`` images in ``[0, 1]`` of the bracketed examples."""
    return save_tensors(Path(out_dir) / THUMBNAILS, {"images": images.float()})


def write_meta(out_dir: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` (with this format version) atomically, as strict JSON."""
    return write_json(Path(out_dir) / META, {**meta, "format_version": RESULTS_FORMAT_VERSION})


def read_meta(out_dir: str | os.PathLike) -> dict[str, Any]:
    """``meta.json`` of a results directory, checked.

    Raises:
        FileNotFoundError: there is no ``meta.json`` (no sweep ran there).
        InputError: it is not valid JSON, lacks a required key, or is another format version.
    """
    path = Path(out_dir) / META
    if not path.is_file():
        raise FileNotFoundError(
            f"no bracket results in {Path(out_dir)} ({META} not found): run "
            "`perturbative brackets` on the training run first, then pass its brackets/ directory"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}); {RERUN}") from error
    missing = [key for key in REQUIRED_META if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise InputError(f"{path} lacks {missing}; {RERUN}")
    if meta["format_version"] != RESULTS_FORMAT_VERSION:
        raise InputError(
            f"{path} has format_version {meta['format_version']!r}, this version of perturbative "
            f"reads version {RESULTS_FORMAT_VERSION}; rerun the sweep with this version"
        )
    return meta


def read_arrays(path: str | os.PathLike, framework: str = "numpy") -> dict[str, Any]:
    """The arrays of a safetensors file, as numpy arrays (``framework="numpy"``) or torch tensors
    (``"torch"``).

    Raises:
        InputError: the file is corrupt or truncated (the message names it and says what to do).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np" if framework == "numpy" else "pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise InputError(
            f"could not read {path} ({error}): the file is corrupt or truncated; "
            f"delete it and {RERUN}"
        ) from error


def finished_steps(out_dir: str | os.PathLike, meta: dict[str, Any]) -> list[int]:
    """The steps ``meta`` lists whose step file exists, ascending."""
    return sorted(int(s) for s in meta.get("steps", []) if step_file(out_dir, int(s)).exists())


def load_results(
    out_dir: str | os.PathLike, *, framework: str = "torch"
) -> tuple[dict, dict[int, dict[str, Any]]]:
    """Read a results directory (or a run directory holding ``brackets/``).

    Args:
        out_dir: the results directory, or the run directory holding it as ``brackets/``.
        framework: ``"torch"`` for tensors, ``"numpy"`` for arrays.

    Returns:
        ``(meta, {step: {name: tensor or array}})`` with steps ascending.

    Raises:
        FileNotFoundError: no results there, or a listed step file is missing.
        InputError: a file is corrupt or does not match ``docs/results-format.md``.
    """
    out_dir = results_dir_of(out_dir)
    meta = read_meta(out_dir)
    steps = sorted(int(s) for s in meta["steps"])
    if not steps:
        raise InputError(f"{out_dir / META} lists no finished checkpoint; {RERUN}")
    per_step = {}
    for step in steps:
        path = step_file(out_dir, step)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {META} but missing; {RERUN}")
        arrays = read_arrays(path, framework)
        absent = [key for key in REQUIRED_STEP if key not in arrays]
        if absent:
            raise InputError(f"{path} lacks {absent}; {RERUN}")
        per_step[step] = arrays
    return meta, per_step


def load_thumbnails(out_dir: str | os.PathLike) -> Any:
    """The bracketed examples' images ``(B, C, H, W)``, or ``None`` when none were saved."""
    path = results_dir_of(out_dir) / THUMBNAILS
    return read_arrays(path).get("images") if path.is_file() else None


def write_metrics(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Replace a ``metrics.jsonl`` with ``rows``, atomically, one strict-JSON object per line."""
    text = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)
    return write_text(path, text)


def append_metrics(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Add one line to a ``metrics.jsonl``."""
    append_json_line(path, row)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` with a ``step``; a line still being written is skipped."""
    return [row for row in read_json_lines(path) if isinstance(row, dict) and "step" in row]


def producing_run_metrics(results_dir: str | os.PathLike, meta: dict[str, Any]) -> list | None:
    """The training metrics of the run that produced these results, or ``None``.

    The run folder is the results directory's parent. When ``meta.json`` records the
    checkpoints' hashes (``sources``, written by ``perturbative brackets``), the metrics are used
    only if that folder's checkpoint of the first recorded step still has the recorded hash:
    a retrained or different run's ``metrics.jsonl`` is not shown beside these results.
    """
    run_dir = Path(results_dir).parent
    sources = meta.get("sources") or {}
    if sources:
        step, expected = min(sources.items(), key=lambda item: int(item[0]))
        checkpoint = step_file(run_dir / "checkpoints", int(step))
        if not checkpoint.is_file() or file_sha256(checkpoint) != expected:
            return None
    return [r for r in read_metrics(run_dir / METRICS) if "train_loss" in r] or None


def write_order_check(out_dir: str | os.PathLike, result: OrderCheckRecord) -> Path:
    """Write the order check's records (strict JSON) as ``<out_dir>/order_check.json``."""
    return write_json(Path(out_dir) / ORDER_CHECK, result.to_json())


def read_order_check(run_dir: str | os.PathLike) -> OrderCheckRecord | None:
    """The order check of a run (``<run>/order_check/order_check.json``), or ``None``.

    Raises:
        InputError: the file is not valid JSON.
    """
    folder = Path(run_dir) / "order_check"
    return read_order_check_file(folder) if (folder / ORDER_CHECK).is_file() else None


def read_recorded_check(run_dir: str | os.PathLike) -> RecordedCheck | None:
    """The order check of a recorded run (``<run>/order_check/recorded.json``) as typed records
    (:func:`perturbative.pipeline.recorded_records.read_recorded_check_file`), or ``None``.

    Raises:
        InputError: the file is not valid JSON, or of a version this reader does not know.
    """
    path = Path(run_dir) / "order_check" / RECORDED_CHECK
    return read_recorded_check_file(path) if path.is_file() else None


def read_phase_check_file(folder: str | os.PathLike) -> PhaseCheckRecord:
    """``<folder>/phase_check.json`` as written by ``perturbative phase-check``, read by
    :meth:`PhaseCheckRecord.from_json`: options, targets, the replay gaps, the tournaments (one
    per checkpoint and phase length) and the summary, typed.

    Raises:
        InputError: there is none, it is not valid JSON, or not a phase check of a version this
            reader knows.
    """
    path = Path(folder) / PHASE_CHECK
    if not path.is_file():
        raise InputError(f"no phase check in {folder}: run `perturbative phase-check RUN` first")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}); rerun the phase check") from error
    return PhaseCheckRecord.from_json(data, str(path))


def read_phase_check(run_dir: str | os.PathLike) -> PhaseCheckRecord | None:
    """The phase check of a run (``<run>/phase_check/phase_check.json``), or ``None``."""
    folder = Path(run_dir) / "phase_check"
    return read_phase_check_file(folder) if (folder / PHASE_CHECK).is_file() else None


def read_order_check_file(folder: str | os.PathLike) -> OrderCheckRecord:
    """``<folder>/order_check.json``, read by :meth:`OrderCheckRecord.from_json` (every version).

    Raises:
        FileNotFoundError: there is none (run ``perturbative order-check`` first).
        InputError: the file is not valid JSON, or not an order check of a known version.
    """
    path = Path(folder) / ORDER_CHECK
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `perturbative order-check` first")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(
            f"{path} is not valid JSON ({error}); rerun `perturbative order-check`"
        ) from error
    return OrderCheckRecord.from_json(data, str(path))


def settled(predicted: Any, second_order: Any) -> Any:
    """Which third-order predictions of an order check the expansion's own error estimate
    trusts: those whose third-order term ``predicted - second_order`` is smaller than the
    prediction (arrays of one shape; a boolean array)."""
    return abs(predicted - second_order) < abs(predicted)
