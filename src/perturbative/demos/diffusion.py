"""A small denoising diffusion model (DDPM) of points in ``R^d``, trained plainly or tilted.

DDPM conventions (Ho et al. 2020): ``T`` noise levels with linear ``beta_t`` (see
:func:`noise_schedule`), ``abar_t = prod_{s <= t} (1 - beta_s)``; a noised point is
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with ``eps ~ N(0, I)``, and the network predicts
``eps``. The per-example loss is ``L_x = (1/2) mean_coords (eps - eps_theta(x_t, t))^2`` over the
``d`` coordinates, with ``t ~ U{1..T}`` and ``eps`` drawn afresh each time the example is used (a
per-example term: batch losses are ``weighted_loss`` or a mean of these).

:func:`train_denoiser` trains with one of four batching schemes (plain; fixed-size batches with
tilt weights; importance resampling; adjusted batches), the demos in :mod:`two_moons` and
:mod:`digits_tilt` compare them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, RandomSampler, WeightedRandomSampler

from perturbative.tilt import AdjustedBatchSampler, weighted_loss

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
        point_frequencies: number of point frequencies (0 for images, whose pixels need none).
        dim: ``d``, the dimension of the points (64 for 8x8 images).
    """

    def __init__(
        self,
        num_steps: int = 100,
        hidden: int = 128,
        time_frequencies: int = 8,
        point_frequencies: int = 6,
        dim: int = 2,
    ) -> None:
        super().__init__()
        self.num_steps, self.dim = num_steps, dim
        tf = math.pi * 2.0 ** torch.arange(time_frequencies)
        self.register_buffer("time_freqs", tf, persistent=False)
        pf = 2.0 ** torch.arange(point_frequencies)
        self.register_buffer("point_freqs", pf, persistent=False)
        width = dim + 2 * time_frequencies + 2 * dim * point_frequencies
        self.net = nn.Sequential(
            nn.Linear(width, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``(b, d)`` points, ``(b,)`` integer levels in ``1..T`` -> ``(b, d)`` noise estimate."""
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
    """``n`` ancestral DDPM samples ``(n, d)``, with ``sigma_t^2 = beta_t``.

    ``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(1 - beta_t)
    + sqrt(beta_t) z`` for ``t = T..1`` (no noise at the last step).
    """
    abar = noise_schedule(model.num_steps).float()
    x = torch.randn(n, model.dim, generator=generator)
    with torch_threads(threads):
        for t in range(model.num_steps, 0, -1):
            beta = 1 - abar[t] / abar[t - 1]
            eps = model(x, torch.full((n,), t))
            x = (x - beta / (1 - abar[t]).sqrt() * eps) / (1 - beta).sqrt()
            if t > 1:
                x = x + beta.sqrt() * torch.randn(n, model.dim, generator=generator)
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


def denoiser_settings(config: Any) -> dict[str, Any]:
    """The :func:`train_denoiser` keywords a demo's settings carry: ``steps``, ``batch_size``,
    ``lr``, ``hidden``, ``diffusion_steps`` (passed as ``num_steps``) and ``seed``. Each demo keeps
    its own defaults and the reasons for them; the mapping onto the trainer lives here once."""
    return {
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "hidden": config.hidden,
        "num_steps": config.diffusion_steps,
        "seed": config.seed,
    }


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
    point_frequencies: int = 6,
) -> DenoiserRun:
    """Train a :class:`Denoiser` on ``data`` ``(N, d)``, optionally tilted by ``weights`` ``(N,)``.

    Batching schemes (all see ``batch_size`` ordinary examples per step on average):

    * ``"plain"``: shuffled fixed-size batches, mean loss; ignores ``weights`` (fits ``p``).
    * ``"weighted"``: shuffled fixed-size batches, ``weighted_loss(L, w, batch_size)``.
    * ``"resample"``: ``WeightedRandomSampler`` draws (with replacement) ``prop. to w``, mean loss.
    * ``"adjusted"``: :class:`AdjustedBatchSampler` with target ``batch_size`` and
      ``drop_last=True``, ``weighted_loss(L, w, batch_size)``.

    Adam with a cosine learning-rate decay to zero; the model's initial parameters and the noise
    draws depend only on ``seed``, so schemes differ only in their batches. ``threads=1`` by
    default: a 128-wide MLP on 128 points gains nothing from more threads, and on a busy machine
    they contend with other jobs for the cores. ``on_step()`` is called after each
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
    model = Denoiser(num_steps, hidden, point_frequencies=point_frequencies, dim=data.shape[1])
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
