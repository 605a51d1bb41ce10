"""Real 2-process gloo groups on CPU (torchrun on loopback): the sweep dealt out over ranks and
order scores with the pool split over ranks equal one process."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from cases import TINY_RUN, TINY_SWEEP
from safetensors.torch import load_file

from perturbative._core.distributed import all_gather_objects, broadcast_object, rank_and_world
from perturbative.cli import main
from perturbative.pipeline import load_results
from perturbative.pipeline.checkpoints import load_checkpoint


def torchrun(*args: str, timeout: int = 300) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout


def test_without_a_group_everything_is_one_rank():
    assert rank_and_world() == (0, 1)
    assert broadcast_object({"a": 1}) == {"a": 1}
    assert all_gather_objects(3) == [3]


def test_two_process_sweep_equals_one_process(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY_RUN, "--run-dir", str(run), "--threads", "1"]) == 0
    assert main(["brackets", str(run), *TINY_SWEEP, "--out", str(tmp_path / "one")]) == 0
    torchrun(
        "-m", "perturbative.cli", "brackets", str(run), *TINY_SWEEP, "--out", str(tmp_path / "two")
    )
    meta_one, one = load_results(tmp_path / "one", framework="numpy")
    meta_two, two = load_results(tmp_path / "two", framework="numpy")
    assert meta_two["steps"] == meta_one["steps"] == [0, 2, 4]
    assert meta_two["sources"] == meta_one["sources"]
    for step in one:
        for key in one[step]:
            # float32 results, computed on one and on two threads: equal to float32 rounding
            np.testing.assert_allclose(two[step][key], one[step][key], rtol=1e-4, atol=1e-6)
    assert not (tmp_path / "two" / ".lock").exists()
    # a second 2-process sweep finds everything done and writes nothing new
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").iterdir()}
    torchrun(
        "-m", "perturbative.cli", "brackets", str(run), *TINY_SWEEP, "--out", str(tmp_path / "two")
    )
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").iterdir()}
    assert {k: v for k, v in after.items() if k.startswith("step_")} == {
        k: v for k, v in before.items() if k.startswith("step_")
    }


def test_order_scores_split_over_ranks_equal_one_process(tmp_path):
    script = tmp_path / "scores.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import torch
            import torch.distributed as dist
            import torch.nn.functional as F
            from torch import nn
            import perturbative as pt

            dist.init_process_group("gloo")
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
            params = dict(model.named_parameters())
            loss_fn = lambda out, y: F.cross_entropy(out, y)
            pool = (torch.randn(11, 4, dtype=torch.float64), torch.randint(0, 3, (11,)))
            u = {k: torch.randn_like(v) for k, v in params.items()}
            split = pt.order_scores(model, loss_fn, params, pool, u, process_group=dist.group.WORLD)
            whole = pt.order_scores(model, loss_fn, params, pool, u)
            torch.testing.assert_close(split, whole, rtol=1e-12, atol=1e-14)
            if dist.get_rank() == 0:
                print("scores agree", split.shape[0])
            dist.destroy_process_group()
            """
        )
    )
    assert "scores agree 11" in torchrun(str(script))


def test_two_process_training_writes_once_and_resumes_exactly(tmp_path):
    """DDP over a real 2-process gloo group: rank 0 alone writes; a run stopped at step 2 and
    resumed under torchrun ends with the same weights, bit for bit, as one never stopped."""
    flags = [a for a in TINY_RUN if a not in ("--steps", "4")]
    straight = tmp_path / "straight"
    torchrun("-m", "perturbative.cli", "train", *flags, "--steps", "4", "--run-dir", str(straight))
    steps = sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert steps == [
        "step_000000.safetensors",
        "step_000002.safetensors",
        "step_000004.safetensors",
    ]
    lines = (straight / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 2, 4]  # one writer, no duplicates

    killed = tmp_path / "killed"
    torchrun("-m", "perturbative.cli", "train", *flags, "--steps", "2", "--run-dir", str(killed))
    torchrun(
        "-m", "perturbative.cli", "train", "--run-dir", str(killed), "--resume", "--steps", "4"
    )
    a = load_file(str(straight / "checkpoints" / "step_000004.safetensors"))
    b = load_file(str(killed / "checkpoints" / "step_000004.safetensors"))
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sampler = load_checkpoint(straight / "checkpoints" / "step_000004.safetensors")["sampler"]
    assert sampler["world_size"] == 2
    # the run's task continues its log as the log holds it: every rank's batch, rank by rank
    from perturbative.pipeline import training_task
    from perturbative.pipeline.recorder import read_order_log

    logged = [r["indices"] for r in read_order_log(straight)]
    assert training_task(straight).batches_after(2, 2) == logged[2:4]
    assert len(training_task(straight).batches_after(4, 3)) == 3  # past the log, into epochs


def test_two_process_tilted_training_uses_the_per_rank_target(tmp_path):
    run = tmp_path / "tilted"
    flags = [a for a in TINY_RUN if a not in ("--steps", "4")]
    torchrun(
        "-m",
        "perturbative.cli",
        "train",
        *flags,
        "--steps",
        "2",
        "--tilt",
        "even=1.0",
        "--run-dir",
        str(run),
    )
    sampler = load_checkpoint(run / "checkpoints" / "step_000002.safetensors")["sampler"]
    assert sampler["world_size"] == 2 and sampler["target_batch_size"] == 32
    assert json.loads((run / "tilt.json").read_text())["n"] > 0
