"""``_core/memory.py``: the peak memory of a stretch of work."""

import torch

from perturbative._core.memory import PeakMemory


def test_the_peak_on_the_cpu_sees_a_tensor_held_and_freed_within_the_stretch():
    before = PeakMemory("cpu")
    baseline = before.gib()
    peak = PeakMemory("cpu")
    held = torch.ones(64 * 2**20)  # 256 MiB, touched
    del held
    assert peak.gib() >= 0.24
    if not peak.since_start:  # Linux: the mark starts again at the current size
        peak.reset()
        assert peak.gib() < baseline + 0.24
    assert peak.describe().startswith("peak memory ") and "GiB" in peak.describe()
