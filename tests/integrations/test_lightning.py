"""``RecorderCallback`` (integrations/lightning.py) with a real Lightning ``Trainer``: it logs the
indices each optimizer step really trained on, accumulation included, and the recorded run's
order predictions hold against really reordering it."""

import copy

import pytest
import torch
import torch.nn.functional as F
from cases import logged_pairs_check

from perturbative._core.io import read_json_lines
from perturbative.pipeline.recorded_run import read_run, run_task
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.replay import replay_gap

pl = pytest.importorskip(
    "pytorch_lightning", reason="Lightning is not installed (pip install -e '.[lightning]')"
)
# Lightning's own deprecation notices (torch's pytree, its hints about workers) are not ours
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


class Witnessed(torch.utils.data.Dataset):
    """The recorded task's examples with their index as a third tensor: the test's witness of
    what each training step got (the callback never reads it)."""

    def __len__(self):
        return 160

    def __getitem__(self, i):
        from recorded_task import INPUTS, TARGETS

        return INPUTS[i], TARGETS[i], torch.tensor(i)


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        from recorded_task import model

        torch.manual_seed(0)
        self.net = model()
        self.seen = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        self.seen.append(index.tolist())
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=2e-2)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def quiet_trainer(**settings):
    """A CPU Trainer that writes nothing (no logger, checkpoints, bar or summary)."""
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **settings,
    )


def fit(run_dir, steps=8, accumulation=1):
    from perturbative.integrations.lightning import RecorderCallback

    module = Module()
    loader = torch.utils.data.DataLoader(
        Witnessed(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2)
    )
    trainer = quiet_trainer(
        max_steps=steps,
        accumulate_grad_batches=accumulation,
        gradient_clip_val=1.0,
        callbacks=[RecorderCallback(run_dir, task="recorded_task:task", save_at=4)],
    )
    trainer.fit(module, loader)
    return module.net, module.seen


@pytest.mark.parametrize("accumulation", [1, 2])
def test_the_callback_logs_the_batches_each_step_trained_on(tmp_path, accumulation):
    run = tmp_path / "run"
    _, seen = fit(run, steps=6, accumulation=accumulation)
    log = read_json_lines(run / "order.jsonl")
    assert len(log) == 6
    for step, record in enumerate(log):
        batches = seen[step * accumulation : (step + 1) * accumulation]
        assert record["indices"] == [i for b in batches for i in b]
    lrs = [record["lr"][0] for record in log]
    assert lrs[:4] == pytest.approx([2e-2, 2e-2, 2e-2, 1e-2])  # StepLR, as each step used it
    if accumulation > 1:  # each step's micro-batches, and the loop replays to its checkpoint
        assert all(r["micro"] == [len(b) for b in seen[:accumulation]] for r in log)
    gap = replay_gap(run, 4, run_task(run), read_run(run), read_order_log(run))
    assert gap.passed, gap


def test_order_predictions_on_a_lightning_run(tmp_path):
    run = tmp_path / "run"
    fit(run, steps=12)
    rows = logged_pairs_check(run, checkpoints=2, pairs=4)
    assert [r.pairs for r in rows] == [4, 4] and all(r.accuracy == 1.0 for r in rows), rows


class Ordered(Module):
    """The same module fed by an OrderSampler: the observed alignment scores the batches from
    Lightning's own backward pass (``on_after_backward``)."""

    def __init__(self, sampler, data):
        super().__init__()
        self.sampler, self.data, self.snapshots = sampler, data, []

    def on_train_start(self):
        from recorded_task import INPUTS, TARGETS

        import perturbative as pt

        held_out = pt.Observable.mean_loss(
            lambda out, y: F.cross_entropy(out, y), (INPUTS[:16], TARGETS[:16])
        )
        loss_fn = lambda out, y, _index: F.cross_entropy(out, y)  # noqa: E731
        self.sampler.attach(self.net, loss_fn, self.trainer.optimizers[0], held_out, self.data)

    def on_after_backward(self):
        self.sampler.observe()

    def on_train_epoch_start(self):  # what the epochs before observed
        self.snapshots.append(copy.deepcopy(self.sampler.state_dict()))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_sampler=self.sampler)


def test_an_order_sampler_drives_a_lightning_run():
    import perturbative as pt

    data = Witnessed()
    sampler = pt.OrderSampler(len(data), 16, policy="alignment", scoring="observed", seed=1)
    module = Ordered(sampler, data)
    trainer = quiet_trainer(max_epochs=2, use_distributed_sampler=False)
    trainer.fit(module)
    first, second = module.seen[:10], module.seen[10:]
    assert len(second) == 10 and sorted(map(sorted, first)) == sorted(map(sorted, second))
    observed = {tuple(b): v for b, v in module.snapshots[1]["observed"]}
    scores = [observed[tuple(b)] for b in second]  # the first epoch's observations
    assert scores == sorted(scores, reverse=True)  # most aligned first
