"""``Recorder``: any training loop recorded into a run folder, resumable, locked, and its
order predictions checked against really reordering it (``pipeline/order_check.py``)."""

import json

import pytest
import torch
from recorded_task import record

from perturbative._core.errors import InputError
from perturbative._core.io import read_json_lines
from perturbative.pipeline.checkpoints import list_checkpoints, read_checkpoint
from perturbative.pipeline.recorded_run import open_recorded_checkpoint
from perturbative.pipeline.recorder import Recorder, save_steps


def test_a_loop_is_recorded_with_its_order_lr_and_checkpoints(tmp_path):
    run = tmp_path / "run"
    net, batches = record(run)
    assert [s for s, _ in list_checkpoints(run)] == [0, 10, 20, 30]
    log = read_json_lines(run / "order.jsonl")
    assert [r["step"] for r in log] == list(range(1, 31))
    assert log[3]["indices"] == batches[3].tolist()
    assert log[0]["lr"] == [pytest.approx(3e-2)] and log[10]["lr"][0] < log[0]["lr"][0]
    info = json.loads((run / "run.json").read_text())
    assert info["optimizer"] == "AdamW" and info["max_grad_norm"] == 100.0
    from recorded_task import task

    at = open_recorded_checkpoint(run, 30, task, dtype=torch.float32)
    for (k, v), w in zip(at.model.state_dict().items(), net.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    assert at.optimizer.param_groups[0]["weight_decay"] == 1e-2


def test_a_killed_loop_resumes_to_the_same_log_and_weights(tmp_path):
    whole, _ = record(tmp_path / "whole")
    record(tmp_path / "cut", steps=25)  # killed after step 25: checkpoints 0, 10, 20
    (tmp_path / "cut" / ".lock").unlink(missing_ok=True)
    resumed, _ = record(tmp_path / "cut", resume=True)
    assert read_json_lines(tmp_path / "cut" / "order.jsonl") == read_json_lines(
        tmp_path / "whole" / "order.jsonl"
    )
    for v, w in zip(resumed.state_dict().values(), whole.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=0, atol=0)


def test_a_second_recorder_and_an_existing_folder_are_refused(tmp_path):
    from recorded_task import model

    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with Recorder(tmp_path / "run", net, opt) as first:
        with pytest.raises(InputError, match="in use by a Recorder"):
            Recorder(tmp_path / "run", net, opt, resume=True)
        first.step([0, 1])
    with pytest.raises(InputError, match="already holds a recorded run"):
        Recorder(tmp_path / "run", net, opt)


def test_save_schedules():
    assert [s for s in range(1, 60) if save_steps("log")(s)] == [1, 2, 5, 10, 20, 50]
    assert [s for s in range(1, 10) if save_steps([3, 7])(s)] == [3, 7]
    with pytest.raises(ValueError):
        save_steps(0)


def test_the_recorder_benchmark_runs(tmp_path, capsys):
    pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install -e '.[hf]')"
    )
    from cases import run_benchmark

    out = tmp_path / "recorder.json"
    run_benchmark(
        "recorder.py",
        "--blocks",
        "1",
        "--steps",
        "2",
        "--writes",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
    )
    assert "overhead" in capsys.readouterr().out and json.loads(out.read_text())["save_ratio"] > 0


DDP_LOOP = """
import os
import sys
import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, {tests!r})
from recorded_task import INPUTS, TARGETS, model

from perturbative.pipeline.recorder import Recorder


class Wrapped(torch.nn.Module):  # how DistributedDataParallel holds the model: as .module
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
net = Wrapped(model())
optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
recorder = Recorder({run!r}, net, optimizer, task="recorded_task:task", save_at=3)
for step in range(6):
    indices = torch.arange(8) + 8 * (2 * step + rank)  # each rank its own shard
    optimizer.zero_grad()
    F.cross_entropy(net(INPUTS[indices]), TARGETS[indices]).backward()
    for p in net.parameters():  # data parallelism: the ranks' mean gradient
        dist.all_reduce(p.grad)
        p.grad /= 2
    optimizer.step()
    recorder.step(indices)
recorder.close()
dist.barrier()
dist.destroy_process_group()
# leave without C++ static destructors: gloo aborted in them ("terminate called without an
# active exception") in about 1 run of 24 under load, after everything above had finished
os._exit(0)
"""


def test_under_ddp_rank_0_writes_and_the_log_holds_every_ranks_indices(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "loop.py"
    tests = str(Path(__file__).resolve().parents[1])
    script.write_text(DDP_LOOP.format(tests=tests, run=str(tmp_path / "run")))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    log = read_json_lines(tmp_path / "run" / "order.jsonl")
    assert len(log) == 6 and log[0]["rank_sizes"] == [8, 8]
    assert log[1]["indices"] == list(range(16, 24)) + list(range(24, 32))
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [0, 3, 6]
    keys = read_checkpoint(list_checkpoints(tmp_path / "run")[-1][1])[0]
    assert "model/0.weight" in keys  # the module inside the wrapper (DDP's .module), unprefixed


def test_a_loop_adds_its_own_state_to_each_checkpoint_and_facts_to_run_json(tmp_path):
    """``checkpoint_info`` (what the loop needs to resume: a sampler's position) is saved into
    every checkpoint beside the recorder's own; ``loop`` is kept in run.json."""
    from perturbative.pipeline.checkpoints import list_checkpoints, read_checkpoint

    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    seen = {"batches": 0}
    with Recorder(
        tmp_path / "run",
        net,
        opt,
        save_at=2,
        checkpoint_info=lambda: {"sampler": dict(seen)},
        loop={"made_by": "a test"},
    ) as recorder:
        for step in range(4):
            net(torch.ones(2, 3)).sum().backward()
            opt.step()
            seen["batches"] += 1
            recorder.step([step])
    infos = [read_checkpoint(path)[1] for _, path in list_checkpoints(tmp_path / "run")]
    assert [(i["step"], i["sampler"]["batches"]) for i in infos] == [(0, 0), (2, 2), (4, 4)]
    assert all("optimizer_param_names" in i for i in infos)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["loop"] == {"made_by": "a test"}
