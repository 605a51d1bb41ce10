"""Training: config validation, checkpoints, exact resume, tilted batches."""

from pathlib import Path

import pytest
import torch

from perturbative._core import io
from perturbative.pipeline import checkpoints


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "step_000001.safetensors"

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(io, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_checkpoint(target, {"x": torch.zeros(2)}, {"step": 1})
    assert list(target.parent.iterdir()) == []
    monkeypatch.undo()
    checkpoints.save_checkpoint(target, {"x": torch.arange(3.0)}, {"step": 1})
    tensors, info = checkpoints.read_checkpoint(target)
    assert torch.equal(tensors["x"], torch.arange(3.0)) and info["step"] == 1
    assert checkpoints.list_checkpoints(tmp_path) == [(1, target)]
    with pytest.raises(ValueError, match="not a checkpoint written by perturbative"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(target))
        checkpoints.read_checkpoint(target)
