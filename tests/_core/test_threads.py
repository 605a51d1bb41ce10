"""_core.threads: torch's thread count on a machine other jobs may share."""

import subprocess
import sys
import time

from perturbative._core import threads


def test_idle_cores_leaves_busy_cores_to_their_jobs(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    for busy, expected in ((0.1, 2), (1.0, 1), (1.9, 1), (2.0, 1), (None, 2)):
        monkeypatch.setattr(threads, "busy_cores", lambda interval=0.25, b=busy: b)
        assert threads.idle_cores() == expected


def test_busy_cores_sees_a_busy_loop():
    busy = threads.busy_cores(0.05)
    if busy is None:  # no /proc/stat here
        return
    assert 0.0 <= busy <= threads.usable_cores() + 1e-9
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let the interpreter start and spin
        assert threads.busy_cores(0.5) >= 0.8
    finally:
        loop.kill()
        loop.wait()
