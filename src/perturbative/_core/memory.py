"""Peak memory of a stretch of work, on the device it ran on.

On a CUDA device: the most the caching allocator held for tensors (``max_memory_allocated``),
reset at the start. On the CPU: the process's resident high-water mark. Linux keeps it as
``VmHWM`` and resets it through ``/proc/self/clear_refs``; elsewhere it is the peak since the
process started (``ru_maxrss``), which only bounds the stretch from above.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def process_peak_gib() -> float | None:
    """The process's peak resident memory since it started, in GiB (None where the OS does not
    say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, else KiB
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class PeakMemory:
    """Measures the peak memory from its creation (or :meth:`reset`) to :meth:`gib`.

    Args:
        device: where the work runs (a CUDA device: tensors the allocator held; else the
            process's resident memory).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Start a new stretch: the peak from now on."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident size
            self.since_start = False
        except OSError:  # not Linux, or not allowed: the peak since the process started
            self.since_start = True

    def gib(self) -> float | None:
        """The peak in GiB since the stretch started (None where the system does not say)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        if not self.since_start:
            found = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
            if found:
                return int(found.group(1)) / 2**20
        return process_peak_gib()

    def describe(self) -> str:
        """``"peak memory 3.41 GiB (resident)"``, for a check's printed summary."""
        peak = self.gib()
        if peak is None:
            return "peak memory not measured on this system"
        kind = "CUDA allocated" if self.device.type == "cuda" else "resident"
        since = ""
        if self.device.type != "cuda" and self.since_start:
            since = ", since the process started"
        return f"peak memory {peak:.2f} GiB ({kind}{since})"
