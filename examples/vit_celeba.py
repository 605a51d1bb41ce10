"""A small vision transformer on CelebA's 40 attributes, recorded, for the phase check's
held-out evaluation.

    python examples/vit_celeba.py --celeba PATH   # record runs/vit_celeba (1200 steps, ~1 min)
    PERTURBATIVE_CELEBA=PATH perturbative phase-check runs/vit_celeba --steps 300,600 \
        --ks 5,20,50 --sources 6 --triples 3 --triple-ks 5,20 --expansion-up-to 0 \
        --replay-steps 300

The model family (a pre-norm transformer over 4x4 patches of 32x32 faces, attention written
out, LayerNorm, no BatchNorm, no dropout) is not that of any run the phase-order methods were
designed or checked on. The sources are the attribute groups of ``perturbative train``'s CelebA
runs (Male, not Male, Smiling, not Smiling, Eyeglasses, Young, not Young, Wearing_Hat). The
loop is an ordinary one: AdamW (lr 1e-3, weight decay 0.05), a 40-step warm-up then a cosine to
0 at the last step, clipping at 1.0, batches of 32. The analysis rebuilds the data from
``PERTURBATIVE_CELEBA`` (default: the ``shared/data/celeba`` folder beside the repository).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

import perturbative as pt
from perturbative.data import load_celeba
from perturbative.pipeline.run import PHASE_SOURCES

SIZE, PATCH = 32, 4
SOURCES = PHASE_SOURCES["celeba"]  # the attribute groups of `perturbative train`'s runs


class Block(nn.Module):
    """Pre-norm attention and MLP, each added back."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        x = x + self.out((weights @ v).transpose(1, 2).reshape(n, t, w))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patches embedded, a learned position per patch, ``depth`` blocks, the tokens' mean read
    out: one logit per attribute."""

    def __init__(self, attributes: int = 40, width: int = 64, depth: int = 4, heads: int = 4):
        super().__init__()
        self.patches = nn.Conv2d(3, width, PATCH, PATCH)
        self.position = nn.Parameter(0.02 * torch.randn(1, (SIZE // PATCH) ** 2, width))
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, attributes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(images).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.blocks(tokens)).mean(1))


def attributes_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the 40 attributes (of one face, or a batch)."""
    return F.binary_cross_entropy_with_logits(logits, targets)


def celeba_root() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba"
    return Path(os.environ.get("PERTURBATIVE_CELEBA", default))


@functools.cache
def _dataset():
    return load_celeba(celeba_root(), image_size=SIZE)


def task() -> pt.Task:
    """What the analysis needs to rebuild the run (``vit_celeba.py:task``)."""
    data = _dataset()
    return pt.Task(
        model=ViT,
        loss_fn=attributes_loss,
        train=Subset(data, data.train_indices.tolist()),
        heldout=Subset(data, data.heldout_indices.tolist()),
        heldout_examples=128,
        sources=data.attribute_groups(SOURCES),
        heldout_sources=data.attribute_groups(SOURCES, "heldout"),
    )


class Indexed(torch.utils.data.Dataset):
    """The training examples with each one's index, for the recorder."""

    def __init__(self, examples) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return i, self.examples[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--celeba", help="the CelebA folder (default: PERTURBATIVE_CELEBA)")
    parser.add_argument("--run-dir", default="runs/vit_celeba")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--save-every", type=int, default=300)
    args = parser.parse_args()
    if args.celeba:
        os.environ["PERTURBATIVE_CELEBA"] = str(Path(args.celeba).resolve())
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    own = task()
    model = ViT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / 40) * 0.5 * (1 + math.cos(math.pi * s / args.steps)),
    )
    recorder = pt.Recorder(
        args.run_dir,
        model,
        optimizer,
        task=f"{Path(__file__).resolve()}:task",
        scheduler=schedule,
        save_at=args.save_every,
        max_grad_norm=1.0,
    )
    loader = DataLoader(
        Indexed(own.train),
        batch_size=32,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(1),
    )
    step = 0
    while step < args.steps:
        for indices, (images, targets) in loader:
            loss = attributes_loss(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            recorder.step(indices)
            step += 1
            if step == args.steps:
                break
    recorder.close()
    images, targets = (torch.stack(x) for x in zip(*own.heldout, strict=True))
    data = _dataset()
    frequency = data.targets[data.train_indices].mean(0).clamp(1e-3, 1 - 1e-3)
    with torch.no_grad():
        held = attributes_loss(model(images), targets)
        constant = attributes_loss(torch.logit(frequency).expand_as(targets), targets)
    sizes = ", ".join(f"{n} {len(m)}" for n, m in own.sources.items())
    print(f"{len(own.train)} training faces ({sizes})")
    print(f"held-out loss {float(held):.3f} (each attribute's training frequency: {constant:.3f})")
    print(f"recorded: {Path(args.run_dir).resolve()}")


if __name__ == "__main__":
    main()
