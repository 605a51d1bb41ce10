"""A small denoising diffusion model of 2-D points, and the tilted-training demo built on it.

DDPM conventions (Ho et al. 2020): ``T`` noise levels with linear ``beta_t`` (see
:func:`noise_schedule`), ``abar_t = prod_{s <= t} (1 - beta_s)``; a noised point is
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with ``eps ~ N(0, I)``, and the network predicts
``eps``. The per-example loss is ``L_x = (1/2) mean_coords (eps - eps_theta(x_t, t))^2`` over the
two coordinates, with ``t ~ U{1..T}`` and ``eps`` drawn afresh each time the example is used (a
per-example term: batch losses are ``weighted_loss`` or a mean of these).

The demo (:func:`run_tilt_demo`) fits two moons, ``p``, plainly and with tilt weights
``w = exp(-lambda dH) / Z`` for ``dH(x) = x_0`` (the first, standardised coordinate), and
compares both models' samples with exact samples of ``p' ~ p exp(-lambda dH)`` (importance
resampling of the data) by the energy distance.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, RandomSampler, WeightedRandomSampler
from tqdm.auto import tqdm

from perturbative._core.io import write_json
from perturbative.tilt import (
    AdjustedBatchSampler,
    check_tilt,
    first_order_shift,
    tilt_weights,
    weighted_loss,
)

BATCHINGS = ("plain", "weighted", "resample", "adjusted")


def noise_schedule(num_steps: int) -> Tensor:
    """``abar_t`` for ``t = 0..T`` (``abar_0 = 1``), float64 of shape ``(T + 1,)``.

    DDPM's linear betas rescaled to ``T`` levels: ``beta_t`` runs linearly from ``0.1 / T`` to
    ``20 / T`` (``1e-4`` to ``0.02`` at ``T = 1000``), so ``abar_T ~ exp(-10)`` for every ``T``.
    """
    betas = torch.linspace(0.1 / num_steps, 20.0 / num_steps, num_steps, dtype=torch.float64)
    if betas[-1] >= 1:
        raise ValueError(f"need at least 21 noise levels for this schedule, got {num_steps}")
    return torch.cat([betas.new_ones(1), torch.cumprod(1 - betas, 0)])


class Denoiser(nn.Module):
    """``eps_theta(x_t, t)``: an MLP on Fourier features of the point and of ``t / T``.

    Inputs are ``x``, ``sin/cos(2^k x)`` for ``k < point_frequencies`` (per coordinate; they let
    a small MLP draw thin structures, which it otherwise smooths over) and
    ``sin/cos(pi 2^k t / T)`` for ``k < time_frequencies``.

    Args:
        num_steps: ``T``, the number of noise levels.
        hidden: width of the three hidden layers.
        time_frequencies: number of time frequencies.
        point_frequencies: number of point frequencies.
    """

    def __init__(
        self,
        num_steps: int = 100,
        hidden: int = 128,
        time_frequencies: int = 8,
        point_frequencies: int = 6,
    ) -> None:
        super().__init__()
        self.num_steps = num_steps
        tf = math.pi * 2.0 ** torch.arange(time_frequencies)
        self.register_buffer("time_freqs", tf, persistent=False)
        pf = 2.0 ** torch.arange(point_frequencies)
        self.register_buffer("point_freqs", pf, persistent=False)
        width = 2 + 2 * time_frequencies + 4 * point_frequencies
        self.net = nn.Sequential(
            nn.Linear(width, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2),
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``(b, 2)`` points, ``(b,)`` integer levels in ``1..T`` -> ``(b, 2)`` noise estimate."""
        phase = (t.to(x.dtype) / self.num_steps)[:, None] * self.time_freqs.to(x.dtype)
        xp = (x[:, :, None] * self.point_freqs.to(x.dtype)).flatten(1)
        return self.net(torch.cat([x, phase.sin(), phase.cos(), xp.sin(), xp.cos()], 1))


def denoising_losses(model: Denoiser, x0: Tensor, generator: torch.Generator) -> Tensor:
    """Per-example DDPM losses ``(1/2) mean_coords (eps - eps_theta(x_t, t))^2``, shape ``(b,)``."""
    abar = noise_schedule(model.num_steps).to(x0.dtype)
    t = torch.randint(1, model.num_steps + 1, (len(x0),), generator=generator)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    a = abar[t][:, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    return 0.5 * ((eps - model(xt, t)) ** 2).mean(1)


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` of samples ``(n, d)`` and ``(m, d)``.

    Zero iff the distributions agree; V-statistics (the diagonal zeros included), so two samples
    of one distribution give a small positive value of order ``1/n``.
    """
    x, y = x.double(), y.double()
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def importance_resample(
    data: Tensor, weights: Tensor, n: int, generator: torch.Generator
) -> Tensor:
    """``n`` exact samples of the weighted empirical distribution ``p'_N(i) = w_i / sum w``."""
    idx = torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    return data[idx]


def two_moons(n: int, noise: float = 0.06, seed: int = 0) -> Tensor:
    """scikit-learn's two moons, standardised per coordinate; float32 ``(n, 2)``."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=noise, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return torch.as_tensor(x, dtype=torch.float32)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (unchanged if ``None``), then restore."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.no_grad()
def sample_denoiser(
    model: Denoiser, n: int, generator: torch.Generator, threads: int | None = 1
) -> Tensor:
    """``n`` ancestral DDPM samples ``(n, 2)``, with ``sigma_t^2 = beta_t``.

    ``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(1 - beta_t)
    + sqrt(beta_t) z`` for ``t = T..1`` (no noise at the last step).
    """
    abar = noise_schedule(model.num_steps).float()
    x = torch.randn(n, 2, generator=generator)
    with torch_threads(threads):
        for t in range(model.num_steps, 0, -1):
            beta = 1 - abar[t] / abar[t - 1]
            eps = model(x, torch.full((n,), t))
            x = (x - beta / (1 - abar[t]).sqrt() * eps) / (1 - beta).sqrt()
            if t > 1:
                x = x + beta.sqrt() * torch.randn(n, 2, generator=generator)
    return x


@dataclass
class DenoiserRun:
    """A trained denoiser and what its training did.

    Attributes:
        model: the trained :class:`Denoiser`.
        grad_norms: ``(steps,)`` gradient norm of each step's loss.
        batch_lengths: ``(steps,)`` number of examples in each batch.
        adjusted_sizes: ``(steps,)`` summed tilt weights of each batch.
        distinct_seen: number of distinct examples drawn at least once.
        seconds: wall-clock training time.
    """

    model: Denoiser
    grad_norms: np.ndarray
    batch_lengths: np.ndarray
    adjusted_sizes: np.ndarray
    distinct_seen: int
    seconds: float


def _batches(batching: str, weights: Tensor, batch_size: int, seed: int):
    """Endless stream of index lists for a batching scheme."""
    n = len(weights)
    if batching == "adjusted":
        # drop_last: the carry restarts each epoch, so an epoch's last batch is partial (its
        # adjusted size anywhere in (0, B]); fixed-size schemes drop their remainder too.
        sampler = AdjustedBatchSampler(weights, batch_size, seed=seed, drop_last=True)
        while True:
            yield from sampler
    generator = torch.Generator().manual_seed(seed)
    if batching == "resample":
        base = WeightedRandomSampler(weights.double(), n, replacement=True, generator=generator)
    else:
        base = RandomSampler(range(n), generator=generator)
    while True:
        yield from BatchSampler(base, batch_size, drop_last=True)


def train_denoiser(
    data: Tensor,
    weights: Tensor | None = None,
    *,
    batching: str = "adjusted",
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 2e-3,
    hidden: int = 128,
    num_steps: int = 100,
    seed: int = 0,
    threads: int | None = 1,
    on_step: Callable[[], None] | None = None,
) -> DenoiserRun:
    """Train a :class:`Denoiser` on ``data`` ``(N, 2)``, optionally tilted by ``weights`` ``(N,)``.

    Batching schemes (all see ``batch_size`` ordinary examples per step on average):

    * ``"plain"``: shuffled fixed-size batches, mean loss; ignores ``weights`` (fits ``p``).
    * ``"weighted"``: shuffled fixed-size batches, ``weighted_loss(L, w, batch_size)``.
    * ``"resample"``: ``WeightedRandomSampler`` draws (with replacement) ``prop. to w``, mean loss.
    * ``"adjusted"``: :class:`AdjustedBatchSampler` with target ``batch_size`` and
      ``drop_last=True``, ``weighted_loss(L, w, batch_size)``.

    Adam with a cosine learning-rate decay to zero; the model's initial parameters and the noise
    draws depend only on ``seed``, so schemes differ only in their batches. ``threads=1`` by
    default: a 128-wide MLP on 128 points gains nothing from more threads, and on a busy machine
    they contend (15x slower measured on 2 shared cores). ``on_step()`` is called after each
    step (a progress bar).

    Returns:
        :class:`DenoiserRun`.
    """
    if batching not in BATCHINGS:
        raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")
    if weights is None:
        weights = torch.ones(len(data))
    if weights.shape != (len(data),):
        raise ValueError(f"weights must have shape ({len(data)},), got {tuple(weights.shape)}")
    torch.manual_seed(seed)
    model = Denoiser(num_steps, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    noise = torch.Generator().manual_seed(seed + 1)
    w = weights.to(data.dtype)
    stream = _batches(batching, weights, batch_size, seed + 2)
    grad_norms, lengths, sizes = np.zeros(steps), np.zeros(steps, dtype=np.int64), np.zeros(steps)
    seen = torch.zeros(len(data), dtype=torch.bool)
    start = time.perf_counter()
    with torch_threads(threads):
        for step in range(steps):
            idx = torch.as_tensor(next(stream))
            losses = denoising_losses(model, data[idx], noise)
            if batching in ("weighted", "adjusted"):
                loss = weighted_loss(losses, w[idx], batch_size)
            else:
                loss = losses.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norms[step] = float(
                torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in model.parameters()))
            )
            seen[idx], lengths[step], sizes[step] = True, len(idx), float(weights[idx].sum())
            opt.step()
            sched.step()
            if on_step is not None:
                on_step()
    return DenoiserRun(
        model=model.eval(),
        grad_norms=grad_norms,
        batch_lengths=lengths,
        adjusted_sizes=sizes,
        distinct_seen=int(seen.sum()),
        seconds=time.perf_counter() - start,
    )


@dataclass
class TiltDemoConfig:
    """Settings of the 2-D tilted-diffusion demo; each default says why.

    Attributes:
        out_dir: where the PNG pictures and ``tilt_demo.json`` go.
        num_data: 4000 two-moons points: enough that the weighted empirical ``p'`` is close to the
            true one at ``ESS/N ~ 1/3``, small enough to train in seconds.
        strength: ``lambda = 1.5`` with ``dH(x) = x_0`` moves most mass to the left moon (weights
            span a factor of about e^5, the largest 6) while keeping ``ESS/N`` near 1/3, inside
            the trusted range of :func:`perturbative.tilt.check_tilt`.
        small_strength: ``lambda = 0.2`` for the first-order check: the second-order term is
            about 5% of the first-order one there, below the training noise of the measurement.
        steps: 6000 Adam steps: at 2500 the moons are still blurred (energy distance to the
            data about 10x the two-sample floor), at 10000 they are sharp; 6000 is close to sharp.
        batch_size: target adjusted batch size ``B_avg = 128`` (ordinary examples per step).
        lr: Adam learning rate 2e-3 with cosine decay: the usual value for small MLP denoisers.
        hidden: width 128: the smallest of 64/128/256 that draws both moons sharply.
        diffusion_steps: ``T = 100`` noise levels: the reverse steps' Gaussian approximation
            needs small ``beta_t`` (at most 0.2 here); more levels only cost sampling time.
        num_samples: 3000 samples per model: the energy distance's sampling error (order
            ``1/n``) is then well below the distances compared.
        seed: seed of data, initialisations, batches and noise.
    """

    out_dir: Path = Path("runs/tilt_demo")
    num_data: int = 4000
    strength: float = 1.5
    small_strength: float = 0.2
    steps: int = 6000
    batch_size: int = 128
    lr: float = 2e-3
    hidden: int = 128
    diffusion_steps: int = 100
    num_samples: int = 3000
    seed: int = 0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        for name in ("num_data", "steps", "batch_size", "hidden", "diffusion_steps", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def demo_dH(x: Tensor) -> Tensor:
    """The demo's perturbation ``dH(x) = x_0``, shape ``(N,)`` from ``(N, 2)``."""
    return x[:, 0]


def _scatter(out: Path, panels: list[tuple[str, Tensor]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels), 3.3), sharex=True, sharey=True
    )
    for ax, (name, pts) in zip(axes, panels, strict=True):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.35, linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-2.5, 2.5)
        ax.set_ylim(-2.5, 2.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _first_order_plot(out: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fo = result["first_order"]
    lam = np.linspace(0, result["config"]["strength"], 50)
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot(lam, fo["predicted_slope"] * lam, label="first order  -lambda Cov_p(x0, dH)")
    ax.plot(fo["exact_curve"]["strength"], fo["exact_curve"]["shift"], "k--", label="exact (data)")
    ax.plot(
        [fo["strength"], result["config"]["strength"]],
        [fo["measured_shift"], result["mean_shift_tilted"]],
        "o",
        label="trained models",
    )
    ax.set_xlabel("lambda")
    ax.set_ylabel("shift of <x0>")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run_tilt_demo(config: TiltDemoConfig, progress: bool = False) -> dict[str, Any]:
    """Train plain and tilted diffusion models on two moons and measure how well they learn ``p'``.

    Writes into ``config.out_dir``: ``tilt_before_after.png`` (data, exact ``p'``, plain and
    tilted model samples), ``tilt_first_order.png`` (predicted against measured shift of
    ``<x_0>``), and ``tilt_demo.json`` (the returned dict).

    Returns:
        Dict with ``distances`` (energy distances to exact ``p'`` samples of the plain and tilted
        models, and ``floor``, that of a second exact sample), ``first_order`` (predicted slope
        ``-Cov_p(x_0, dH)``, the shift measured at ``small_strength`` and the exact one),
        ``diagnostics`` of the weights, ``seconds`` and the ``config``.
    """
    start = time.perf_counter()
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data = two_moons(config.num_data, seed=config.seed)
    dH = demo_dH(data).double()
    weights = tilt_weights(dH, config.strength).float()
    batches = AdjustedBatchSampler(weights, config.batch_size, seed=config.seed).epoch_batches()
    diagnostics = check_tilt(weights, target_batch_size=config.batch_size, batches=batches)

    bar = tqdm(total=3 * config.steps, desc="tilt demo", unit="step", disable=not progress)
    train = dict(
        on_step=lambda: bar.update(1),
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        hidden=config.hidden,
        num_steps=config.diffusion_steps,
        seed=config.seed,
    )
    plain = train_denoiser(data, batching="plain", **train)
    tilted = train_denoiser(data, weights, batching="adjusted", **train)
    small_w = tilt_weights(dH, config.small_strength).float()
    small = train_denoiser(data, small_w, batching="adjusted", **train)
    bar.close()

    gen = torch.Generator().manual_seed(config.seed + 10)
    n = config.num_samples
    s_plain = sample_denoiser(plain.model, n, gen)
    s_tilted = sample_denoiser(tilted.model, n, gen)
    s_small = sample_denoiser(small.model, n, gen)
    exact = importance_resample(data, weights, n, gen)
    exact2 = importance_resample(data, weights, n, gen)
    distances = {
        "plain_to_tilted_target": energy_distance(s_plain, exact),
        "tilted_to_tilted_target": energy_distance(s_tilted, exact),
        "floor_exact_to_exact": energy_distance(exact2, exact),
        "plain_to_data": energy_distance(
            s_plain, data[torch.randperm(len(data), generator=gen)[:n]]
        ),
    }

    mean_plain = float(s_plain[:, 0].mean())
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "diagnostics": diagnostics.as_dict(),
        "distances": distances,
        "mean_shift_tilted": float(s_tilted[:, 0].mean()) - mean_plain,
        "first_order": {
            **_first_order(config, data, dH, float(s_small[:, 0].mean()) - mean_plain),
            "sampling_standard_error": float(s_small[:, 0].std() * math.sqrt(2 / n)),
        },
        "train_seconds": {"plain": plain.seconds, "tilted": tilted.seconds, "small": small.seconds},
    }
    _scatter(
        out / "tilt_before_after.png",
        [
            ("data ~ p", data),
            (f"exact p' (lambda={config.strength})", exact),
            (f"plain model  ED={distances['plain_to_tilted_target']:.3f}", s_plain),
            (f"tilted model  ED={distances['tilted_to_tilted_target']:.3f}", s_tilted),
        ],
        "p'(x) ~ p(x) exp(-lambda x0): energy distance (ED) to exact p' samples",
    )
    _first_order_plot(out / "tilt_first_order.png", result)
    result["seconds"] = time.perf_counter() - start
    write_json(out / "tilt_demo.json", result, indent=2)
    return result


def _first_order(config: TiltDemoConfig, data: Tensor, dH: Tensor, measured: float) -> dict:
    """The first-order prediction ``-lambda Cov_p(x0, dH)`` of the shift of ``<x0>`` at
    ``small_strength``, the shift measured on the trained model, and the exact curve."""
    x0 = data[:, 0].double()
    slope = float(first_order_shift(x0, dH))
    grid = np.linspace(0, config.strength, 16)

    def exact(lam: float) -> float:
        return float((tilt_weights(dH, lam) * x0).mean() - x0.mean())

    return {
        "observable": "x0, the first standardised coordinate",
        "strength": config.small_strength,
        "predicted_slope": slope,
        "predicted_shift": slope * config.small_strength,
        "measured_shift": measured,
        "exact_shift": exact(config.small_strength),
        "exact_curve": {"strength": grid.tolist(), "shift": [exact(lam) for lam in grid]},
    }
