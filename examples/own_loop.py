"""Your own training loop, recorded and checked: a small GPT-2 learns characters of the Python
documentation, and the order predictions are checked against really reordering the run.

    python examples/own_loop.py                 # record runs/own_loop (600 steps)
    perturbative brackets runs/own_loop         # brackets at every checkpoint, for the report
    perturbative order-check runs/own_loop --checkpoints 3 --logged-pairs 10 --windows 2 \
        --window-sizes 3 --scored-examples 10 --example-pairs 0 --batch-pairs 0 --exchanges 0 \
        --horizons 0 --lr-scales 1              # predictions against really reordering it
    perturbative report runs/own_loop           # runs/own_loop/report.html

All four, timed: ``python benchmarks/own_run_example.py``.

The loop is an ordinary one: a Hugging Face ``GPT2LMHeadModel`` built from a config (random init,
dropout 0: nothing is downloaded), AdamW with linear warm-up and cosine decay, gradient clipping
at 1.0, batches of 32 sequences drawn by a ``DataLoader``. Three lines make it analysable: the
:class:`perturbative.Task` below (how to rebuild the run in a new process), the
:class:`perturbative.Recorder`, and ``recorder.step(indices)`` at the end of each step. The
order check then restores checkpoints, predicts what swapping two of the run's own minibatches
does to the held-out loss with the run's AdamW state, scheduled lr and clipping, and trains both
orders in float64 to compare. Needs the optional extra: pip install -e '.[hf]'.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import math
from pathlib import Path
from pydoc_data.topics import topics

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import perturbative as pt

LENGTH = 33  # 32 next-token targets per sequence


#: Text domains of the documentation, for the phase check (``perturbative phase-check``): which
#: part of the docs to train on first. Each is a set of ``pydoc_data.topics`` entries; a sequence
#: belongs to the domain of the entry it starts in, and entries named nowhere to "other".
DOMAINS = {
    "statements": (
        "assert", "assignment", "augassign", "break", "class", "compound", "continue", "del",
        "for", "function", "global", "if", "else", "import", "nonlocal", "pass", "raise",
        "return", "try", "while", "with", "async", "await", "yield", "lambda",
    ),
    "expressions": (
        "atom-identifiers", "atom-literals", "attribute-references", "binary", "bitwise",
        "booleans", "calls", "comparisons", "exprlists", "in", "operator-summary", "power",
        "shifting", "slicings", "subscriptions", "unary", "conversions", "floating",
        "imaginary", "integers", "numbers", "lists", "dict",
    ),
    "data model": (
        "attribute-access", "customization", "specialnames", "specialattrs", "callable-types",
        "numeric-types", "sequence-types", "objects", "types", "context-managers", "truth",
    ),
    "built-in types": (
        "typesseq", "typesseq-mutable", "typesmapping", "typesmethods", "typesmodules",
        "typesfunctions", "bltin-code-objects", "bltin-ellipsis-object", "bltin-null-object",
        "bltin-type-objects",
    ),
    "strings": ("formatstrings", "string-methods", "strings"),
    "debugger": ("debugger",),
}  # fmt: skip


@functools.cache
def _text() -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The docs' characters as rows of 33 codes in text order, the shuffled order of the rows,
    the alphabet, and the domain each row starts in."""
    keys = sorted(topics)
    text = "\n".join(topics[k] for k in keys)
    alphabet = sorted(set(text))
    codes = torch.tensor([alphabet.index(c) for c in text])
    rows = codes[: len(codes) // LENGTH * LENGTH].reshape(-1, LENGTH)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    domain_of = {k: d for d, members in DOMAINS.items() for k in members}
    starts = [0]
    for k in keys[:-1]:
        starts.append(starts[-1] + len(topics[k]) + 1)
    entry = [keys[bisect.bisect_right(starts, LENGTH * r) - 1] for r in range(len(rows))]
    return rows, order, alphabet, [domain_of.get(e, "other") for e in entry]


def sequences() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Characters of the Python docs as sequences of 33 codes: (train, held out, alphabet)."""
    rows, order, alphabet, _ = _text()
    rows = rows[order]
    return rows[:-256], rows[-256:], alphabet


def domains() -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Each text domain's sequences: (indices into the training set, into the held-out set)."""
    _, order, _, domain = _text()
    train, heldout = {}, {}
    cut = len(order) - 256
    for position, row in enumerate(order.tolist()):
        split, index = (train, position) if position < cut else (heldout, position - cut)
        split.setdefault(domain[row], []).append(index)
    names = [*DOMAINS, "other"]
    return (
        {n: train[n] for n in names if n in train},
        {n: heldout[n] for n in names if n in heldout},
    )


def build_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(sequences()[2]),
        n_positions=LENGTH,
        n_embd=64,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,  # no special tokens in a character vocabulary
        eos_token_id=None,
    )
    return GPT2LMHeadModel(config)


def next_token(outputs, batch) -> torch.Tensor:
    """Mean next-token cross-entropy of ONE sequence (the call shape of every function)."""
    return F.cross_entropy(outputs.logits[0, :-1], batch["labels"][0, 1:])


def target_log_probabilities(outputs, batch) -> torch.Tensor:
    """Each target character's log-probability, ``(sequences, 32)``: what the report shows of a
    held-out sequence, rather than 103 logits per position."""
    logp = outputs.logits[:, :-1].log_softmax(-1)
    return logp.gather(-1, batch["labels"][:, 1:, None])[..., 0]


class Sequences(torch.utils.data.Dataset):
    """Keyword examples ``{"input_ids", "labels"}``, indexed like the run's order log."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


def task() -> pt.Task:
    """What the analysis needs to rebuild the run from its folder (``own_loop.py:task``)."""
    train, heldout, alphabet = sequences()
    train_domains, heldout_domains = domains()
    return pt.Task(
        model=build_model,
        loss_fn=next_token,
        train=Sequences(train),
        heldout=Sequences(heldout),
        heldout_examples=64,
        examples_view="text",
        describe=lambda example: "".join(alphabet[c] for c in example["input_ids"]),
        measure=target_log_probabilities,
        tokens=lambda example: [alphabet[c] for c in example["labels"][1:]],
        sources=train_domains,
        heldout_sources=heldout_domains,
    )


class Indexed(torch.utils.data.Dataset):
    """The training set with each example's index beside it, for the loop's own bookkeeping."""

    def __init__(self, data: torch.utils.data.Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[int, dict]:
        return i, self.data[i]


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int = 50):
    """The loop's schedule: linear warm-up over ``warmup`` steps, then a cosine over ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )


def train_step(model, optimizer, schedule, batch: dict) -> None:
    """One step of the loop, as written: the model's own loss, backward, clipping at 1.0, the
    optimizer's step, then the scheduler's."""
    loss = model(**batch).loss
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/own_loop")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--save-every", type=int, default=150)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    train, heldout, alphabet = sequences()
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, args.steps)
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
        batch_size=32,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(1),
    )
    step = 0
    while step < args.steps:
        for indices, batch in loader:
            train_step(model, optimizer, schedule, batch)
            recorder.step(indices)  # the dataset indices this step trained on
            step += 1
            if step == args.steps:
                break
    recorder.close()
    model.eval()
    with torch.no_grad():
        held = float(model(input_ids=heldout[:64], labels=heldout[:64]).loss)
    print(f"held-out next-token loss {held:.3f} (uniform: {math.log(len(alphabet)):.3f})")
    print(f"recorded: {Path(args.run_dir).resolve()}")


if __name__ == "__main__":
    main()
