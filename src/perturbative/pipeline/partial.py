"""The progress file of an unfinished check: :class:`PartialCheck`.

Every check that trains (the order check of either kind of run, the phase check) saves each
unit it finishes (a pair, a floor, a window, a tournament) as one JSON line, so that a check
that stops continues where it stopped when the same command runs again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perturbative._core.errors import InputError
from perturbative._core.io import append_json_line, file_sha256, read_json_lines, write_text
from perturbative.pipeline.checkpoints import list_checkpoints


class PartialCheck:
    """The pairs, floors and windows an unfinished check has finished, one JSON line each in
    ``<out>/order_check.progress.jsonl``, so that a check that stops (interrupted, killed, out
    of time) continues where it stopped when the same command runs again: pairs and windows are
    drawn from the seed alone, so the rerun draws the same ones and computes only those missing.

    The first line holds the settings and the checkpoints' hashes; a rerun with other settings
    or on changed checkpoints is refused rather than mixed in. The file goes when the check
    finishes; a folder holding a finished check is never overwritten.
    """

    def __init__(self, path: Path, done: dict[str, Any]):
        self.path, self.done = path, done

    @classmethod
    def open(
        cls,
        out: Path,
        header: dict[str, Any],
        *,
        progress: str,
        finished: str,
        what: str = "order check",
    ) -> PartialCheck:
        """Continue the unfinished check in ``out``, or begin one (``progress`` and
        ``finished`` name its files there, ``what`` the kind of check in messages).

        Raises:
            InputError: ``out`` holds a finished check, or an unfinished one with other
                settings or on other checkpoints.
        """
        path = out / progress
        if not path.exists():
            if (out / finished).exists():
                raise InputError(
                    f"{out} already holds a finished {what}: pass --out-dir for a new one "
                    "(or --summary-only to print this one again)"
                )
            write_text(path, json.dumps(header) + "\n")
            return cls(path, {})
        saved, *items = read_json_lines(path) or [None]
        if saved != header:
            raise InputError(
                f"{out} holds an unfinished {what} {_differences(saved, header)}: rerun "
                f"with its settings to continue it, pass --out-dir for a new check, or delete "
                f"{path} to start this one over"
            )
        # a line cut short when the check stopped is dropped, and recomputed
        write_text(path, "".join(json.dumps(x) + "\n" for x in [header, *items]))
        return cls(path, {item["key"]: item["value"] for item in items})

    def get(self, key: tuple, compute):
        """The saved value of ``key``, or ``compute()`` saved at once."""
        key = "/".join(map(str, key))
        if key not in self.done:
            self.done[key] = compute()
            append_json_line(self.path, {"key": key, "value": self.done[key]}, allow_nan=True)
        return self.done[key]

    def find(self, key: tuple) -> Any:
        """The saved value of ``key``, or None."""
        return self.done.get("/".join(map(str, key)))

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


#: settings a check's records do not depend on: a check may continue under other values
UNSAVED = ("out_dir", "replay_steps", "allow_replay_gap", "from_check")


def partial_header(run_dir: Path, steps: Sequence[int], settings: dict[str, Any]) -> dict:
    """What a continued check must share with the one it continues: every setting the records
    depend on (not :data:`UNSAVED`), and the hash of each checkpoint checked."""
    files = dict(list_checkpoints(run_dir))
    header = {
        "options": {k: v for k, v in settings.items() if k not in UNSAVED},
        "checkpoints": {str(step): file_sha256(files[step]) for step in steps},
    }
    return json.loads(json.dumps(header))  # tuples as lists, as read back


def _differences(saved: Any, header: dict) -> str:
    if not isinstance(saved, dict):
        return "whose settings cannot be read"
    if saved.get("options") != header["options"]:
        old = saved.get("options") or {}
        names = [k for k in {**old, **header["options"]} if old.get(k) != header["options"].get(k)]
        new = header["options"]
        changed = ", ".join(f"{k}: {old.get(k)} there, {new.get(k)} now" for k in names)
        return f"with other settings ({changed})"
    return "on checkpoints that have changed since (their hashes differ)"
