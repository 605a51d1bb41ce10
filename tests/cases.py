"""Tiny seeded float64 problems as data, turned into fixtures by ``conftest.py``.

Each builder returns a fresh :class:`Case` (same numbers every call), so tests can mutate what
they get. Models are smooth (tanh), so the swap expansion holds at moderate learning rates;
the convnet's BatchNorm is in eval mode with non-trivial running statistics. Example counts are
odd and minibatch splits uneven on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from torch import Tensor, nn

#: The two engines every derivative is tested in.
ENGINES = ["forward", "double_backward"]
#: The shared CelebA subset beside the repository (tests that need it skip when it is absent).
SHARED_CELEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba"
#: Attribute names that HTML, JSON and matplotlib must escape.
EVIL_NAMES = [
    "Black_Hair",
    "Brown_Hair",
    "<script>alert(1)</script>",
    "</script>",
    'a"b&c$x^{$\u2028',
]
#: Command-line flags of a tiny digits run and sweep (seconds on one thread).
TINY_RUN = ["--steps", "4", "--checkpoint-every", "2", "--eval-every", "2", "--image-size", "16"]
TINY_SWEEP = ["--ranking-examples", "6", "--test-examples", "8"]


def run_benchmark(name: str, *argv: str) -> None:
    """Run ``benchmarks/<name>`` as ``python benchmarks/<name> *argv`` would, in this process
    (pytest's ``capsys`` then holds what it printed); a nonzero exit fails. The torch threads a
    script sets are put back after it (a later test computing with other threads would round
    differently)."""
    import runpy
    import sys
    from pathlib import Path

    script = str(Path(__file__).parents[1] / "benchmarks" / name)
    saved, sys.argv = sys.argv, [script, *argv]
    threads = torch.get_num_threads()
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as done:
        assert done.code == 0, f"{name} exited with {done.code}"
    finally:
        sys.argv = saved
        torch.set_num_threads(threads)


def tiny_digits_run(
    folder: Path, steps: int = 6, checkpoint_every: int = 3, tilt: str | None = None
) -> Path:
    """A real digits run of ``perturbative train``, as small as it gets: 8x8 images, a
    sixteenth-width MXResNet, batches of 4 (seconds on a CPU); tilted by ``tilt``."""
    from perturbative.pipeline.config import TrainConfig
    from perturbative.pipeline.train import train

    config = TrainConfig.demo(
        run_dir=str(folder),
        image_size=8,
        width=0.0625,
        steps=steps,
        checkpoint_every=checkpoint_every,
        eval_every=checkpoint_every,
        batch_size=4,
        tilt=tilt,
    )
    return train(config, progress=False)


def assert_dicts_close(actual, expected, **kw):
    """Two parameter dicts have the same keys and close values."""
    assert set(actual) == set(expected)
    for k in expected:
        torch.testing.assert_close(actual[k], expected[k], **kw)


def autograd_gradient(case, example):
    """The textbook gradient of one example's loss: one backward pass."""
    loss = case.loss_fn(case.model(example[0]), *example[1:])
    grads = torch.autograd.grad(loss, list(case.params.values()))
    return dict(zip(case.params, grads, strict=True))


def random_dH(n=50, seed=0):
    """A seeded ``(n,)`` float64 perturbation ``dH``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float64)


class SafeMish(nn.Module):
    """Mish written as ``x tanh(softplus(x))``: finite second derivatives in fp32 too."""

    def forward(self, x):
        return x * torch.tanh(F.softplus(x))


def engine_convnet(activation: nn.Module) -> nn.Module:
    """A 2-output convnet with eval-mode BatchNorm (non-trivial statistics) and ``activation``."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        activation,
        nn.Conv2d(3, 3, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    ).double()
    with torch.no_grad():
        bn = model[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return model.eval()


def bce_loss(outputs, targets):
    return F.binary_cross_entropy_with_logits(outputs, targets)


DTYPE = torch.float64


def train_mode_batchnorm_net():
    """A tiny float64 net with BatchNorm in train mode: each batch is normalised by its own
    statistics, so a batch's loss is not a mean of independent per-example losses."""
    torch.manual_seed(11)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Linear(5, 2)
    )
    model = model.double().train()
    g = torch.Generator().manual_seed(12)

    def batch(n):
        return (
            torch.randn(n, 3, generator=g, dtype=torch.float64),
            torch.rand(n, 2, generator=g, dtype=torch.float64).round(),
        )

    return model, batch


@dataclass
class Case:
    """One problem: ``(model, loss_fn, params, data)`` plus uneven minibatch sizes.

    Attributes:
        splits: sizes of consecutive minibatches of ``data`` (uneven, summing to ``n``).
    """

    name: str
    model: nn.Module
    loss_fn: Callable[..., Tensor]
    data: tuple[Tensor, ...]
    splits: tuple[int, ...]

    @property
    def params(self) -> dict[str, Tensor]:
        return dict(self.model.named_parameters())

    def rows(self, index):
        """``data`` at ``index`` (a slice keeps the leading dimension), tuple or keyword batch."""
        if isinstance(self.data, dict):
            return {k: v[index] for k, v in self.data.items()}
        return tuple(t[index] for t in self.data)

    def example(self, i: int):
        """Example ``i`` as data with leading dimension 1."""
        return self.rows(slice(i, i + 1))

    def minibatches(self) -> list:
        out, start = [], 0
        for size in self.splits:
            out.append(self.rows(slice(start, start + size)))
            start += size
        return out


def mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """MSE written out (torch's ``F.mse_loss`` breaks forward-over-reverse AD in torch 2.13)."""
    return ((outputs - targets) ** 2).mean()


def binary_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(outputs, targets)


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets)


def half_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``1/2 (w . x - y)^2`` for a one-output linear model: Hessian ``x x^T``."""
    return 0.5 * ((outputs - targets) ** 2).sum()


def linear_mse() -> Case:
    torch.manual_seed(1)
    model = nn.Linear(3, 2).to(DTYPE)
    x = torch.randn(5, 3, dtype=DTYPE)
    y = torch.randn(5, 2, dtype=DTYPE)
    return Case("linear_mse", model, mean_squared_error, (x, y), (2, 3))


def mlp_bce() -> Case:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).to(DTYPE)
    x = torch.randn(6, 3, dtype=DTYPE)
    y = torch.randint(0, 2, (6, 1)).to(DTYPE)
    return Case("mlp_bce", model, binary_cross_entropy, (x, y), (1, 3, 2))


def convnet_ce() -> Case:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 3),
    ).to(DTYPE)
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.normal_(0, 0.3)
    model.eval()
    x = torch.randn(5, 2, 3, 3, dtype=DTYPE)
    y = torch.randint(0, 3, (5,))
    return Case("convnet_ce", model, cross_entropy, (x, y), (3, 2))


def pooled_relu_convnet() -> Case:
    """A convnet with ReLU and max pooling: piecewise smooth, its kinks crossed by real steps
    (40 examples of 1x8x8, two minibatches of 10 after 20 for warming up, MSE)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 1),
    ).to(DTYPE)
    x = torch.randn(40, 1, 8, 8, dtype=DTYPE)
    y = torch.randn(40, 1, dtype=DTYPE)
    return Case("pooled_relu_convnet", model, mean_squared_error, (x, y), (20, 10, 10))


def least_squares() -> Case:
    """``L_x(w) = 1/2 (w . x - y)^2``: ``A_x = x x^T``, ``b_x = y x`` (closed-form brackets)."""
    torch.manual_seed(4)
    model = nn.Linear(4, 1, bias=False).to(DTYPE)
    x = torch.randn(5, 4, dtype=DTYPE)
    y = torch.randn(5, 1, dtype=DTYPE)
    return Case("least_squares", model, half_squared_error, (x, y), (2, 3))


CASES: dict[str, Callable[[], Case]] = {
    "linear_mse": linear_mse,
    "mlp_bce": mlp_bce,
    "convnet_ce": convnet_ce,
}


class SequenceClassifier(nn.Module):
    """A sequence ``(L, d)`` -> class logits through ``body``, mean- or last-pooled."""

    def __init__(self, body: nn.Module, width: int, pool: str) -> None:
        super().__init__()
        self.embed = nn.Linear(3, width)
        self.body, self.pool = body, pool
        self.head = nn.Linear(width, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(self.embed(x))
        h = h[0] if isinstance(h, tuple) else h  # nn.LSTM returns (output, (h, c))
        return self.head(h.mean(1) if self.pool == "mean" else h[:, -1])


def transformer_ce() -> Case:
    """``nn.TransformerEncoder`` with default settings in eval mode: PyTorch's CPU flash
    attention and the encoder's fused fast path, neither of which has a second derivative."""
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    model = SequenceClassifier(nn.TransformerEncoder(layer, 2), 8, "mean").to(DTYPE).eval()
    x = torch.randn(5, 4, 3, dtype=DTYPE)
    return Case("transformer_ce", model, cross_entropy, (x, torch.tensor([0, 1, 1, 0, 1])), (2, 3))


def lstm_ce() -> Case:
    """``nn.LSTM``: its CPU kernels have no forward-mode derivative."""
    torch.manual_seed(5)
    model = SequenceClassifier(nn.LSTM(8, 8, batch_first=True), 8, "last").to(DTYPE).eval()
    x = torch.randn(5, 4, 3, dtype=DTYPE)
    return Case("lstm_ce", model, cross_entropy, (x, torch.tensor([1, 0, 1, 1, 0])), (3, 2))


def embedding_ce() -> Case:
    """An embedding bag over 12 tokens of which the examples use only 0-7: rows 8-11 never get
    a gradient, so Adam's second moment stays exactly zero there."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.EmbeddingBag(12, 4, mode="mean"), nn.Tanh(), nn.Linear(4, 3))
    tokens = torch.randint(0, 8, (6, 3))
    return Case(
        "embedding_ce", model.to(DTYPE), cross_entropy, (tokens, torch.randint(0, 3, (6,))), (3, 3)
    )


def _transformers():
    """``transformers``, or a clean skip where the optional extra is not installed."""
    import pytest

    return pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install -e '.[hf]')"
    )


def hf_lm_loss(outputs, batch) -> Tensor:
    """Next-token cross-entropy of one sequence, ``labels`` -100 ignored, in the model's dtype.

    (``outputs.loss`` would be the same number, but ``transformers`` computes its own losses in
    float32, which caps float64 comparisons at about 1e-7.)"""
    logits, labels = outputs.logits[0, :-1], batch["labels"][0, 1:]
    return F.cross_entropy(logits, labels, ignore_index=-100)


def hf_classifier_loss(outputs, batch) -> Tensor:
    """Cross-entropy of a sequence or image classifier's logits against ``labels``."""
    return F.cross_entropy(outputs.logits, batch["labels"])


def hf_gpt2() -> Case:
    """A tiny random-init GPT-2 language model: tied input and output embeddings, an attention
    mask with right padding, labels -100 on the padding (the LM loss ignores them)."""
    transformers = _transformers()
    torch.manual_seed(7)
    config = transformers.GPT2Config(vocab_size=40, n_positions=12, n_embd=16, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config).to(DTYPE).eval()
    ids = torch.randint(0, 40, (5, 8))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 6:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    return Case("hf_gpt2", model, hf_lm_loss, batch, (2, 3))


def hf_bert() -> Case:
    """A tiny BERT-style encoder classifier (3 classes), padding masked."""
    transformers = _transformers()
    torch.manual_seed(8)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    model = transformers.BertForSequenceClassification(config).to(DTYPE).eval()
    ids = torch.randint(0, 40, (5, 7))
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 1, 0])}
    return Case("hf_bert", model, hf_classifier_loss, batch, (3, 2))


def hf_vit() -> Case:
    """A tiny ViT-style image classifier on 8x8 one-channel images."""
    transformers = _transformers()
    torch.manual_seed(9)
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    model = transformers.ViTForImageClassification(config).to(DTYPE).eval()
    batch = {
        "pixel_values": torch.randn(5, 1, 8, 8, dtype=DTYPE),
        "labels": torch.tensor([2, 0, 1, 2, 1]),
    }
    return Case("hf_vit", model, hf_classifier_loss, batch, (2, 3))


def write_synthetic_results(
    directory: Path,
    *,
    steps: tuple[int, ...] = (0, 100, 200, 300),
    attribute_names: list[str] | None = None,
    bracket_examples: int = 4,
    test_examples: int = 8,
    param_names: list[str] | None = None,
    thumbnails: bool = True,
    metrics: bool = True,
    seed: int = 0,
) -> dict:
    """Write ``directory/brackets/`` (and ``directory/metrics.jsonl``) with seeded numbers.

    Bracket norms follow ``|[v_i, v_j]| = 0.3 |g_i| |g_j| exp(noise)`` so their log-log
    correlation with the gradient norms is high but not perfect. The output shifts of the first
    two attributes move together (attribute 1 is about minus attribute 0), so they are the
    strongest co-moving pair.

    Args:
        directory: the run directory; results go to ``directory / "brackets"``.
        steps: checkpoint steps.
        attribute_names: ``K`` output names (default ``attr_0 ...attr_4``).
        bracket_examples: ``B``.
        test_examples: ``T``.
        param_names: ``L`` parameter tensor names (default three names).
        thumbnails: also write ``thumbnails.safetensors`` (RGB, ``8 x 8``).
        metrics: also write ``metrics.jsonl`` one level above ``brackets/``.
        seed: numpy seed.

    Returns:
        ``{"dir": results directory, "meta": meta dict, "steps": {step: arrays}}``.
    """
    rng = np.random.default_rng(seed)
    names = attribute_names or [f"attr_{k}" for k in range(5)]
    params = param_names or ["stem.weight", "block.0.weight", "head.bias"]
    sizes = [27 * (i + 1) for i in range(len(params))]
    b, t, k, n_layers = bracket_examples, test_examples, len(names), len(params)
    pairs = [[i, j] for i in range(b) for j in range(i + 1, b)]
    out = Path(directory) / "brackets"
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": 1,
        "dataset": "synthetic",
        "attribute_names": names,
        "steps": sorted(steps),
        "lr": 0.005,
        "bracket_examples": b,
        "pairs": pairs,
        "test_examples": t,
        "param_names": params,
        "param_sizes": sizes,
        "ranking_examples": 5,
        "observable": "held-out mean BCE of the test batch",
        "preconditioner": "none",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    targets = (rng.random((t, k)) > 0.5).astype(np.float32)
    written = {}
    for n, step in enumerate(sorted(steps)):
        grad_norm = np.exp(rng.normal(0.0, 1.0, b) - 0.3 * n)
        bracket_norm = np.array(
            [0.3 * grad_norm[i] * grad_norm[j] * np.exp(rng.normal(0, 0.2)) for i, j in pairs]
        )
        shift = rng.normal(0.0, 1.0, (len(pairs), t, k)) * 1e-4 * (n + 1)
        if k >= 2:
            shift[..., 1] = -shift[..., 0] + 0.1 * shift[..., 1]
        arrays = {
            "output_shift": shift.astype(np.float32),
            "outputs": rng.normal(0.0, 2.0, (t, k)).astype(np.float32),
            "targets": targets,
            "grad_norm": grad_norm.astype(np.float32),
            "bracket_norm": bracket_norm.astype(np.float32),
            "bracket_layer_rms": rng.random((len(pairs), n_layers)).astype(np.float32),
            "grad_layer_rms": rng.random((b, n_layers)).astype(np.float32),
            "cancellation": rng.random(len(pairs)).astype(np.float32),
            "ranking_indices": rng.permutation(100)[:5].astype(np.int64),
            "ranking_scores": np.sort(rng.random(5))[::-1].astype(np.float32).copy(),
            "test_indices": np.arange(1000, 1000 + t, dtype=np.int64),
        }
        save_file(arrays, str(out / f"step_{step:06d}.safetensors"))
        written[step] = arrays
    if thumbnails:
        images = rng.random((b, 3, 8, 8)).astype(np.float32)
        save_file({"images": images}, str(out / "thumbnails.safetensors"))
    if metrics:
        lines = [
            json.dumps({"step": s, "train_loss": 0.7 * np.exp(-s / 200), "heldout_accuracy": 0.5})
            for s in range(0, max(steps) + 1, 50)
        ]
        (Path(directory) / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return {"dir": out, "meta": meta, "steps": written}


def write_synthetic_order_check(run_dir: Path, seed: int = 0) -> Path:
    """``run_dir/order_check/order_check.json`` in the format ``perturbative order-check``
    writes, from seeded numbers (real differences = predicted + noise)."""
    from perturbative.pipeline.order_records import OrderCheckRecord, PairRecord, WindowRecord
    from perturbative.pipeline.order_summary import summarize
    from perturbative.pipeline.results import write_order_check

    rng = np.random.default_rng(seed)
    checkpoints = []
    for step in (100, 300):
        scales = []
        for scale, horizons in ((1.0, (0, 1, 5)), (0.1, (0,))):
            pairs = []
            for n in range(30):
                predicted = float(rng.normal()) * scale**2
                follow = scale == 1.0 and n < 10
                hs = list(horizons if follow else (0,))
                pairs.append(
                    {
                        "kind": "example" if n % 3 else "batch",
                        "predicted": predicted,
                        "second_order": 0.9 * predicted,
                        "sgd_bracket": predicted * float(rng.uniform(-1, 1)),
                        "state_part": 0.0,
                        "gradient_norms": [float(rng.uniform(1, 2)), float(rng.uniform(1, 2))],
                        "horizons": hs,
                        "real": [
                            predicted * (1 + 0.3 * h) + 0.1 * scale**2 * float(rng.normal())
                            for h in hs
                        ],
                    }
                )
            windows = [
                {
                    "k": k,
                    "best_is_real_best": bool(i % 4),
                    "second_order_best_is_real_best": bool(i % 2),
                    "gap_share": 0.9,
                    "real_gap": 1.0,
                    "predicted": [],
                    "real": [],
                }
                for k in (3, 4)
                for i in range(4)
            ]
            floor = {"float32": [1e-6] * len(horizons), "repeat": 0.0}
            scales.append(
                {
                    "scale": scale,
                    "lr": 5e-3 * scale,
                    "horizons": list(horizons),
                    "pairs": pairs,
                    "floor": floor,
                    "windows": windows,
                    "summary": summarize(
                        [PairRecord.from_json(p) for p in pairs],
                        horizons,
                        floor,
                        [WindowRecord.from_json(w) for w in windows],
                        seed,
                    ).to_json(),
                }
            )
        checkpoints.append({"step": step, "scales": scales})
    check = {"run": str(run_dir), "lr": 5e-3, "checkpoints": checkpoints}
    return write_order_check(Path(run_dir) / "order_check", OrderCheckRecord.from_json(check))


def warm_up(case: Case, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    """A few real steps on the case's minibatches, so that the optimizer has its state (a
    fresh Adam or momentum optimizer makes predictions warn)."""
    for i in range(steps):
        batch = case.minibatches()[i % len(case.splits)]
        optimizer.zero_grad()
        loss = torch.stack(
            [
                case.loss_fn(case.model(batch[0][j : j + 1]), batch[1][j : j + 1])
                for j in range(len(batch[0]))
            ]
        ).mean()
        loss.backward()
        optimizer.step()


#: How many steps :func:`at_lr` gives the rate of: more than any test takes.
AT_LR_STEPS = 64


def at_lr(optimizer: torch.optim.Optimizer, lr: float | None):
    """``optimizer`` as the loop's training step (no clipping) with every param group at ``lr``
    for each of its first :data:`AT_LR_STEPS` steps (``None``: the groups' own lrs at every
    step). The rates are given, not derived by scaling the optimizer's lr, so each step uses
    ``lr`` exactly; a prediction past the last given step fails instead of inventing one."""
    from perturbative import TrainingStep

    return TrainingStep(optimizer, rates=None if lr is None else [lr] * AT_LR_STEPS)


def random_preconditioner(params, seed=0):
    """A positive diagonal preconditioner in [0.5, 1.5), keyed like ``params``."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.5 for k, v in params.items()}


def logged_pairs_check(run: Path, checkpoints: int = 2, pairs: int = 4) -> list:
    """The order check of a run on its own logged batches alone (``pairs`` per checkpoint, at
    its own lr, ``h = 0``): each checkpoint's summary row of them."""
    from perturbative.pipeline.config import OrderCheckOptions
    from perturbative.pipeline.order_check import order_check
    from perturbative.pipeline.results import read_order_check_file

    options = OrderCheckOptions(
        checkpoints=checkpoints, logged_pairs=pairs, example_pairs=0, batch_pairs=0,
        exchanges=0, windows=0, horizons=(0,), lr_scales=(1.0,), floor_pairs=0,
    )  # fmt: skip
    check = read_order_check_file(order_check(run, options, progress=False).parent)
    return [entry.scales[0].summary.rows("logged")[0] for entry in check.checkpoints]


def warm_adam_mlp(seed: int, dtype: torch.dtype = torch.float64, sources: int = 4):
    """A small tanh MLP and Adam (betas 0.8, 0.999) after five steps on its own data, that data
    ``(x, y)`` (60 examples; 40 on are never trained), and ``sources`` phases of two batches of
    two examples each: ``(model, optimizer, (x, y), phases)``."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).to(dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2, betas=(0.8, 0.999))
    x, y = torch.randn(60, 3, dtype=dtype), torch.randn(60, 1, dtype=dtype)
    for s in range(5):  # a state to start from
        optimizer.zero_grad()
        (0.5 * ((model(x[8 * s : 8 * s + 8]) - y[8 * s : 8 * s + 8]) ** 2).mean()).backward()
        optimizer.step()
    phases = [[(x[4 * s + 2 * b : 4 * s + 2 * b + 2], y[4 * s + 2 * b : 4 * s + 2 * b + 2])
               for b in range(2)] for s in range(sources)]  # fmt: skip
    return model, optimizer, (x, y), phases
