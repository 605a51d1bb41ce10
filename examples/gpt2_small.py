"""GPT-2 small (124M parameters) in a plain loop, recorded and checked in float32 on the CPU.

    python examples/gpt2_small.py                 # record runs/gpt2_small (120 steps, 5 min)
    perturbative order-check runs/gpt2_small --steps 40,80 --dtype float32 --expansion 2 \
        --logged-pairs 12 --scored-examples 16 --score-window 2 --floor-pairs 2 --windows 0 \
        --example-pairs 0 --batch-pairs 0 --exchanges 0 --horizons 0 --lr-scales 1

The model is the GPT-2 small configuration (12 layers, 12 heads, width 768, the 50,257-token
vocabulary, tied embeddings: 124,439,808 parameters), randomly initialised with dropout 0:
nothing is downloaded. Its text is the Python documentation that ships with Python
(``pydoc_data.topics``) read as UTF-8 bytes, each byte one token id (0-255 of the vocabulary),
in sequences of 64 next-token targets. The loop: AdamW (lr 6e-4, weight decay 0.1) with 20
steps of linear warm-up then a cosine, clipping at 1.0, 4 sequences per step, trained past the
warm-up and recorded with :class:`perturbative.Recorder` every 20 steps. The analyses run in
float32: float64 does not fit the Hessian-vector products of a 124M model in 23 GB.
``docs/results/gpt2-small.md`` has the measured table. Needs the optional extra:
pip install -e '.[hf]'.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from pathlib import Path
from pydoc_data.topics import topics

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import perturbative as pt

LENGTH = 65  # 64 next-token targets per sequence
HELDOUT = 64  # held-out sequences set aside (the check's observable uses the first 8)


@functools.cache
def sequences() -> tuple[torch.Tensor, torch.Tensor]:
    """The docs' UTF-8 bytes as rows of 65 token ids, shuffled: (train, held out)."""
    data = "\n".join(topics[k] for k in sorted(topics)).encode()
    codes = torch.tensor(list(data))
    rows = codes[: len(codes) // LENGTH * LENGTH].reshape(-1, LENGTH)
    rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]
    return rows[:-HELDOUT], rows[-HELDOUT:]


def build_model():
    """The GPT-2 small configuration, random init, dropout 0, tied embeddings."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_embd=768,
        n_layer=12,
        n_head=12,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def next_token(outputs, batch) -> torch.Tensor:
    """Mean next-token cross-entropy of ONE sequence (the call shape of every function)."""
    return F.cross_entropy(outputs.logits[0, :-1], batch["labels"][0, 1:])


class Sequences(torch.utils.data.Dataset):
    """Keyword examples ``{"input_ids", "labels"}``, indexed like the run's order log."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


def task() -> pt.Task:
    """What the analysis needs to rebuild the run from its folder (``gpt2_small.py:task``)."""
    train, heldout = sequences()
    return pt.Task(
        model=build_model,
        loss_fn=next_token,
        train=Sequences(train),
        heldout=Sequences(heldout),
        heldout_examples=8,
        examples_view="text",
        describe=lambda example: bytes(example["input_ids"].tolist()).decode(errors="replace"),
    )


class Indexed(torch.utils.data.Dataset):
    """The training set with each example's index beside it, for the loop's own bookkeeping."""

    def __init__(self, data: torch.utils.data.Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[int, dict]:
        return i, self.data[i]


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int):
    """Linear warm-up over ``warmup`` steps, then a cosine to 0 at ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/gpt2_small")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--save-every", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where one is here")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    train, heldout = sequences()
    model = build_model().to(args.device)
    print(f"GPT-2 small: {sum(p.numel() for p in model.parameters()):,} parameters")
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1)
    schedule = warmup_cosine(optimizer, args.steps, args.warmup)
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
        Indexed(Sequences(train)),
        batch_size=4,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(1),
    )
    step, start = 0, time.perf_counter()
    for indices, batch in loader:
        batch = {k: v.to(args.device) for k, v in batch.items()}
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recorder.step(indices)  # the dataset indices this step trained on
        step += 1
        seconds = (time.perf_counter() - start) / step
        print(f"step {step}: loss {loss.item():.3f} ({seconds:.1f} s a step)", flush=True)
        if step == args.steps:
            break
    recorder.close()
    model.eval()
    with torch.no_grad():
        rows = heldout[:8].to(args.device)
        held = float(model(input_ids=rows, labels=rows).loss)
    print(f"held-out next-token loss {held:.3f} (uniform over 256 bytes: {math.log(256):.3f})")
    print(f"recorded: {Path(args.run_dir).resolve()}")


if __name__ == "__main__":
    main()
