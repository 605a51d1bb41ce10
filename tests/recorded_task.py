"""A tiny task for the recorded-run tests, importable as ``recorded_task:task``: an MLP
classifier of 3 classes on 200 seeded float32 examples (160 to train, 40 held out)."""

import torch
import torch.nn.functional as F
from torch import nn

from perturbative.pipeline.task import Task

generator = torch.Generator().manual_seed(3)
INPUTS = torch.randn(200, 6, generator=generator)
TARGETS = (INPUTS[:, 0] + 0.5 * INPUTS[:, 1] > 0).long() + (INPUTS[:, 2] > 1).long()


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def loss(outputs, targets):
    return F.cross_entropy(outputs, targets)


train = list(zip(INPUTS[:160], TARGETS[:160], strict=True))
heldout = list(zip(INPUTS[160:], TARGETS[160:], strict=True))
task = Task(model=model, loss_fn=loss, train=train, heldout=heldout, heldout_examples=40)
