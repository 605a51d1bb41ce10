"""A tiny task for the recorded-run tests, importable as ``recorded_task:task``: an MLP
classifier of 3 classes on 200 seeded float32 examples (160 to train, 40 held out)."""

import torch
import torch.nn.functional as F
from torch import nn

from perturbative.pipeline.recorder import Recorder
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


# --- what the replay gate must catch: the same names and shapes, another network or data
def dropout_model() -> nn.Module:
    """The task's network with dropout after the activation (no parameters: the same names)."""
    net = model()
    net.insert(2, nn.Dropout(0.3))
    return net


def relu_model() -> nn.Module:
    """The task's names and shapes with another activation."""
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


dropout_task = Task(model=dropout_model, loss_fn=loss, train=train, heldout=heldout)
relu_task = Task(model=relu_model, loss_fn=loss, train=train, heldout=heldout)
changed_data_task = Task(
    model=model, loss_fn=loss, train=[(x + 0.1, y) for x, y in train], heldout=heldout
)


def record(
    run_dir,
    steps=30,
    save_at=10,
    optimizer="AdamW",
    resume=False,
    start=0,
    task=None,
    clip=100.0,
    recorded_clip="same",
    network=None,
):
    """Record a plain loop over this task: AdamW (or another optimizer), a scheduler, gradient
    clipping at ``clip`` (the Recorder told ``recorded_clip``, by default the same), the network
    ``network()`` (default the task's), trained in train mode; returns the trained model and the
    batches of every step."""
    torch.manual_seed(0)
    net = (network or model)().train()
    opt = getattr(torch.optim, optimizer)(net.parameters(), lr=3e-2, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 0.05 * s))
    if resume:
        start = Recorder.restore(run_dir, net, opt, sched)
    recorder = Recorder(
        run_dir,
        net,
        opt,
        task=task or "recorded_task:task",
        scheduler=sched,
        save_at=save_at,
        max_grad_norm=clip if recorded_clip == "same" else recorded_clip,
        resume=resume,
    )
    order = torch.Generator().manual_seed(1)
    batches = [torch.randperm(160, generator=order)[:16] for _ in range(steps)]
    for indices in batches[start:]:
        opt.zero_grad()
        F.cross_entropy(net(INPUTS[indices]), TARGETS[indices]).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        sched.step()
        recorder.step(indices)
    recorder.close()
    return net, batches


# --- a tiny BERT-style sequence classifier for the Hugging Face Trainer's run (random init)
def bert_model():
    import transformers

    config = transformers.BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def classifier_loss(outputs, batch):
    return F.cross_entropy(outputs.logits, batch["labels"])


_ids = torch.randint(0, 30, (96, 8), generator=torch.Generator().manual_seed(5))
_labels = (_ids[:, 0] % 3).long()
SEQUENCES = [
    {"input_ids": _ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": _labels[i]}
    for i in range(96)
]
bert_task = Task(
    model=bert_model,
    loss_fn=classifier_loss,
    train=SEQUENCES[:64],
    heldout=SEQUENCES[64:],
    heldout_examples=32,
)


# --- a tiny GPT-2 on random "words" (random init, built from a config): keyword batches, a
# per-token measure and tokens for the report's text view
LETTERS = "abcdefghij"


def gpt2_model():
    import transformers

    config = transformers.GPT2Config(
        vocab_size=len(LETTERS),
        n_positions=9,
        n_embd=16,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def next_token_loss(outputs, batch):
    return F.cross_entropy(outputs.logits[0, :-1], batch["input_ids"][0, 1:])


def target_log_probabilities(outputs, batch):
    """Each target token's log-probability, ``(T, 8)``."""
    logp = outputs.logits[:, :-1].log_softmax(-1)
    return logp.gather(-1, batch["input_ids"][:, 1:, None])[..., 0]


_words = torch.randint(0, len(LETTERS), (96, 9), generator=torch.Generator().manual_seed(6))
_words[:, 1::2] = (_words[:, 0::2][:, :4] + 1) % len(LETTERS)  # a learnable rule
WORDS = [{"input_ids": _words[i]} for i in range(96)]
lm_task = Task(
    model=gpt2_model,
    loss_fn=next_token_loss,
    train=WORDS[:64],
    heldout=WORDS[64:],
    heldout_examples=32,
    examples_view="text",
    describe=lambda example: "".join(LETTERS[c] for c in example["input_ids"]),
    measure=target_log_probabilities,
    tokens=lambda example: [LETTERS[c] for c in example["input_ids"][1:]],
)


def record_keyword(run_dir, task_name="lm_task", steps=12, save_at=6):
    """Record a plain AdamW loop over a keyword-batch task of this module."""
    task = globals()[task_name]
    net = task.model()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    recorder = Recorder(run_dir, net, opt, task=f"recorded_task:{task_name}", save_at=save_at)
    order = torch.Generator().manual_seed(2)
    for _ in range(steps):
        indices = torch.randperm(len(task.train), generator=order)[:8]
        batch = task.batch(indices.tolist())
        opt.zero_grad()
        torch.stack(
            [
                task.loss_fn(
                    net(**{k: v[i : i + 1] for k, v in batch.items()}),
                    {k: v[i : i + 1] for k, v in batch.items()},
                )
                for i in range(8)
            ]
        ).mean().backward()
        opt.step()
        recorder.step(indices)
    recorder.close()


# --- images (n, 1, 4, 4) through a linear classifier: the report shows them as thumbnails
IMAGES = torch.rand(80, 1, 4, 4, generator=torch.Generator().manual_seed(7))
IMAGE_CLASSES = (IMAGES.mean((1, 2, 3)) > 0.5).long()
image_task = Task(
    model=lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)),
    loss_fn=loss,
    train=list(zip(IMAGES[:60], IMAGE_CLASSES[:60], strict=True)),
    heldout=list(zip(IMAGES[60:], IMAGE_CLASSES[60:], strict=True)),
    examples_view="image",
)


def record_precisely(
    run_dir,
    steps=20,
    autocast=None,
    tell_autocast=True,
    micro=None,
    tell_micro=True,
    scaler=False,
    infinite_at=None,
):
    """Record the task's loop under mixed precision or gradient accumulation: forward passes
    under ``torch.autocast(dtype=autocast)``, each step the mean of ``micro`` micro-batches'
    mean losses (sizes, e.g. ``(10, 6)``), a ``GradScaler`` whose step ``infinite_at`` meets an
    infinite gradient (and is skipped); the Recorder told of each unless ``tell_*`` is false."""
    torch.manual_seed(0)
    net = model().train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-2, weight_decay=1e-2)
    grads = torch.amp.GradScaler("cpu", init_scale=2.0**4) if scaler else None
    recorder = Recorder(
        run_dir,
        net,
        opt,
        task="recorded_task:task",
        save_at=10,
        max_grad_norm=1.0,
        autocast=autocast if tell_autocast else None,
        scaler=grads,
    )
    sizes = micro or (16,)
    order = torch.Generator().manual_seed(1)
    for step in range(steps):
        indices = torch.randperm(160, generator=order)[: sum(sizes)]
        parts = list(torch.split(indices, list(sizes)))
        opt.zero_grad()
        for part in parts:
            with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
                inputs = INPUTS[part] * (float("inf") if step == infinite_at else 1.0)
                value = F.cross_entropy(net(inputs).float(), TARGETS[part]) / len(parts)
            (grads.scale(value) if grads else value).backward()
        if grads:
            grads.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        if grads:
            grads.step(opt)
            grads.update()
        else:
            opt.step()
        recorder.step(indices, micro_batches=parts if tell_micro and micro else None)
    recorder.close()
