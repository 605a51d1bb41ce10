"""A recurrent model on another text: an LSTM learns the characters of the standard library's
docstrings, recorded, for the phase check's held-out evaluation.

    python examples/lstm_docstrings.py          # record runs/lstm_docstrings (600 steps, ~1 min)
    perturbative phase-check runs/lstm_docstrings --steps 150,300,450 --ks 5,20,50 --sources 6 \
        --triples 5 --triple-ks 5,20 --expansion-up-to 0

The model family (an ``nn.LSTM``, no attention, no normalisation) and the data (docstrings of
functions, classes and modules, read from the running interpreter with ``inspect.getdoc``) are
not those of any run the phase-order methods were designed on. The sources are families of
modules (numbers, files, concurrency, ...): which kind of documentation to train on first. The
loop is an ordinary one: Adam with betas (0.9, 0.99), a step decay of the lr (halved every 200
steps), clipping at 0.5, batches of 32 sequences of 33 characters.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import perturbative as pt

LENGTH = 33  # 32 next-character targets per sequence
HELDOUT = 256

#: The sources: families of standard-library modules whose docstrings make up the text.
FAMILIES = {
    "numbers": ("math", "cmath", "decimal", "fractions", "statistics", "random", "numbers"),
    "files": ("os", "shutil", "pathlib", "glob", "tempfile", "io", "zipfile", "tarfile"),
    "data formats": ("csv", "pickle", "base64", "struct", "configparser", "plistlib"),
    "concurrency": ("threading", "queue", "asyncio", "concurrent.futures", "subprocess", "sched"),
    "internet": ("urllib.parse", "http.client", "email.message", "smtplib", "socket", "ssl"),
    "containers": ("collections", "heapq", "bisect", "array", "weakref", "copy", "enum"),
    "time": ("datetime", "time", "calendar", "zoneinfo", "timeit"),
}  # fmt: skip


def _docstrings(module_name: str) -> list[str]:
    """The module's docstring and those of its public classes, functions and methods, in name
    order (what the interpreter holds: its version's text)."""
    module = importlib.import_module(module_name)
    docs = [inspect.getdoc(module) or ""]
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        docs.append(inspect.getdoc(value) or "")
        if inspect.isclass(value):
            for attribute, member in sorted(vars(value).items()):
                if not attribute.startswith("_") and callable(member):
                    docs.append(inspect.getdoc(member) or "")
    return [d for d in docs if d]


@functools.cache
def _text() -> tuple[torch.Tensor, list[str], list[str]]:
    """Every family's docstrings cut into rows of 33 character codes, the alphabet, and each
    row's family."""
    texts = {
        family: "\n\n".join(d for m in modules for d in _docstrings(m))
        for family, modules in FAMILIES.items()
    }
    alphabet = sorted({c for t in texts.values() for c in t})
    rows, family = [], []
    for name, text in texts.items():
        codes = torch.tensor([alphabet.index(c) for c in text])
        cut = codes[: len(codes) // LENGTH * LENGTH].reshape(-1, LENGTH)
        rows.append(cut)
        family += [name] * len(cut)
    order = torch.randperm(len(family), generator=torch.Generator().manual_seed(0))
    return torch.cat(rows)[order], alphabet, [family[i] for i in order.tolist()]


class CharLSTM(nn.Module):
    """Embedding, one LSTM layer, a linear read-out: next-character logits ``(n, 32, V)``."""

    def __init__(self, vocabulary: int, width: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, 48)
        self.lstm = nn.LSTM(48, width, batch_first=True)
        self.out = nn.Linear(width, vocabulary)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.embed(codes))
        return self.out(hidden)


def next_character(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-character cross-entropy (of one sequence, or a batch of them)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def build_model() -> nn.Module:
    return CharLSTM(len(_text()[1]))


def _split() -> tuple[list, list, dict, dict]:
    rows, _, family = _text()
    examples = [(r[:-1], r[1:]) for r in rows]
    train, heldout = examples[:-HELDOUT], examples[-HELDOUT:]
    train_sources: dict[str, list[int]] = {}
    heldout_sources: dict[str, list[int]] = {}
    for i, name in enumerate(family):
        if i < len(train):
            train_sources.setdefault(name, []).append(i)
        else:
            heldout_sources.setdefault(name, []).append(i - len(train))
    return train, heldout, train_sources, heldout_sources


def task() -> pt.Task:
    """What the analysis needs to rebuild the run (``lstm_docstrings.py:task``)."""
    train, heldout, train_sources, heldout_sources = _split()
    return pt.Task(
        model=build_model,
        loss_fn=next_character,
        train=train,
        heldout=heldout,
        heldout_examples=64,
        sources=train_sources,
        heldout_sources=heldout_sources,
    )


class Indexed(torch.utils.data.Dataset):
    """The training examples with each one's index, for the recorder."""

    def __init__(self, examples: list) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return i, self.examples[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/lstm_docstrings")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--save-every", type=int, default=150)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    train, heldout, train_sources, _ = _split()
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=200, gamma=0.5)
    recorder = pt.Recorder(
        args.run_dir,
        model,
        optimizer,
        task=f"{Path(__file__).resolve()}:task",
        scheduler=schedule,
        save_at=args.save_every,
        max_grad_norm=0.5,
    )
    loader = DataLoader(
        Indexed(train),
        batch_size=32,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(1),
    )
    step = 0
    while step < args.steps:
        for indices, (codes, targets) in loader:
            loss = next_character(model(codes), targets)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            schedule.step()
            recorder.step(indices)
            step += 1
            if step == args.steps:
                break
    recorder.close()
    codes = torch.stack([c for c, _ in heldout])
    targets = torch.stack([t for _, t in heldout])
    with torch.no_grad():
        held = float(next_character(model(codes), targets))
    sizes = ", ".join(f"{n} {len(m)}" for n, m in train_sources.items())
    print(f"{len(train)} training sequences ({sizes}), {len(_text()[1])} characters")
    print(f"held-out next-character loss {held:.3f} (uniform: {math.log(len(_text()[1])):.3f})")
    print(f"recorded: {Path(args.run_dir).resolve()}")


if __name__ == "__main__":
    main()
