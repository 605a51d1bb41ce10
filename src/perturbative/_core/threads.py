"""How many CPU threads torch should use on a machine that other jobs may share.

Torch takes one thread per core. On cores that other processes keep busy, those threads wait for
each other at every parallel region, and small models run many times slower than on one thread
(``python benchmarks/busy_machine.py`` measures it). :func:`idle_cores` samples how busy the cores
are right now; the command line uses that many threads (at least one) unless ``--threads`` says
otherwise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def busy_cores(interval: float = 0.25) -> float | None:
    """Cores kept busy by all processes over ``interval`` seconds (``/proc/stat``), or ``None``
    where the OS does not say."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(interval)
    second = _cpu_times()
    if second is None:
        return None
    total = sum(second) - sum(first)
    idle = (second[3] + second[4]) - (first[3] + first[4])  # idle + iowait
    if total <= 0:
        return None
    return (1.0 - idle / total) * (os.cpu_count() or 1)


def idle_cores(interval: float = 0.25) -> int:
    """Threads to use: the usable cores less those other processes keep busy, at least 1."""
    cores = usable_cores()
    busy = busy_cores(interval)
    if busy is None:
        return cores
    return max(1, min(cores, round(cores - busy)))


def _cpu_times() -> list[int] | None:
    try:
        line = Path("/proc/stat").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = line.split()
    if fields[0] != "cpu" or len(fields) < 6:
        return None
    return [int(v) for v in fields[1:9]]
