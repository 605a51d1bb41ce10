"""A Hugging Face ``Trainer`` run, recorded by a callback and checked: a BERT-style classifier
tells Python's documentation from Python's own source code.

    python examples/hf_trainer.py               # train and record runs/hf_trainer (under a minute)
    perturbative brackets runs/hf_trainer       # brackets at every checkpoint, for the report
    perturbative order-check runs/hf_trainer --checkpoints 3 --logged-pairs 34 --windows 7 \
        --window-sizes 3 --example-pairs 0 --batch-pairs 0 --exchanges 0 --horizons 0 \
        --lr-scales 1
    perturbative report runs/hf_trainer         # runs/hf_trainer/report.html

Both kinds of text ship with Python: the documentation of ``pydoc_data.topics`` and the source of
standard-library modules, cut into 32-character snippets (class 0: documentation, 1: source).
The model is a ``BertForSequenceClassification`` built from a small config (random init,
dropout 0: nothing is downloaded), trained by the ``Trainer`` with its defaults for the
optimizer (AdamW), the schedule (linear decay) and clipping (1.0).
``perturbative.integrations.huggingface.RecorderCallback`` records it; the :func:`task` below is
how the analysis rebuilds it. Needs the optional extra: pip install -e '.[hf]'.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import inspect
import itertools
import json
import pydoc_data.topics
import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F

import perturbative as pt

LENGTH = 32
SOURCES = (json, textwrap, inspect, functools, argparse)


@functools.cache
def _snippets() -> tuple[list[dict], list[str]]:
    """Keyword examples ``{"input_ids", "attention_mask", "labels"}`` in a seeded random order,
    and where each comes from: "documentation" or the standard-library module."""
    docs = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    sources = [inspect.getsource(module) for module in SOURCES]
    code = "\n".join(sources)
    ends = list(itertools.accumulate(len(text) + 1 for text in sources))
    rows, labels, origins = [], [], []
    for label, text in enumerate((docs[: len(code)], code)):
        codes = [min(ord(c), 127) for c in text]
        for start in range(0, len(codes) - LENGTH, LENGTH):
            rows.append(codes[start : start + LENGTH])
            labels.append(label)
            module = SOURCES[bisect.bisect_right(ends, start)].__name__
            origins.append(module if label else "documentation")
    ids, targets = torch.tensor(rows), torch.tensor(labels)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0)).tolist()
    examples = [
        {
            "input_ids": ids[i],
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": targets[i],
        }
        for i in order
    ]
    return examples, [origins[i] for i in order]


def snippets() -> tuple[list[dict], list[dict]]:
    """Keyword examples ``{"input_ids", "attention_mask", "labels"}``: (train, held out)."""
    examples, _ = _snippets()
    return examples[:-512], examples[-512:]


def sources() -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """The text domains (the documentation, and each module's source code) as the phase check's
    sources: (indices into the training set, into the held-out set)."""
    _, origins = _snippets()
    cut = len(origins) - 512
    train, heldout = {}, {}
    for position, origin in enumerate(origins):
        split, index = (train, position) if position < cut else (heldout, position - cut)
        split.setdefault(origin, []).append(index)
    return train, heldout


def build_model():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=LENGTH,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def classification_loss(outputs, batch) -> torch.Tensor:
    """Cross-entropy of ONE snippet's logits (the call shape of every function)."""
    return F.cross_entropy(outputs.logits, batch["labels"])


def task() -> pt.Task:
    """What the analysis needs to rebuild the run from its folder (``hf_trainer.py:task``)."""
    train, heldout = snippets()
    train_sources, heldout_sources = sources()
    return pt.Task(
        model=build_model,
        loss_fn=classification_loss,
        train=train,
        heldout=heldout,
        heldout_examples=128,
        output_names=("documentation", "source code"),
        examples_view="text",
        describe=lambda example: "".join(chr(c) for c in example["input_ids"]),
        sources=train_sources,
        heldout_sources=heldout_sources,
    )


def main() -> None:
    import transformers

    from perturbative.integrations.huggingface import RecorderCallback

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/hf_trainer")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--save-every", type=int, default=75)
    args = parser.parse_args()
    torch.manual_seed(0)
    train, heldout = snippets()
    arguments = transformers.TrainingArguments(
        output_dir=str(Path(args.run_dir).parent / "hf_trainer_output"),
        per_device_train_batch_size=32,
        max_steps=args.steps,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    model = build_model()
    callback = RecorderCallback(
        args.run_dir, task=f"{Path(__file__).resolve()}:task", save_at=args.save_every
    )
    trainer = transformers.Trainer(
        model=model, args=arguments, train_dataset=train, callbacks=[callback]
    )
    trainer.train()
    model.eval()
    batch = {k: torch.stack([e[k] for e in heldout]) for k in heldout[0]}
    with torch.no_grad():
        accuracy = float((model(**batch).logits.argmax(1) == batch["labels"]).float().mean())
    print(f"held-out accuracy {accuracy:.3f} on {len(heldout)} snippets")
    print(f"recorded: {Path(args.run_dir).resolve()}")


if __name__ == "__main__":
    main()
