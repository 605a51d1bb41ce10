"""Tilting a real generative model: a diffusion model of the embedded 8x8 digits steered to
``p exp(-dH)``, measured against the exact target.

The data are scikit-learn's 1,797 digit images (8x8, 17 grey levels), scaled to ``[-1, 1]``. A
diffusion model (:mod:`perturbative.demos.diffusion`) fit to the training images learns their
empirical distribution ``p_N``. Trained with weights ``w_i = exp(-lambda dH(x_i)) / Z`` it should
learn ``p'_N(i) = w_i / sum_j w_j``, the training set reweighted: so every statistic of the
generated images has an exact target value. Two perturbations:

* **class**: ``dH(x) = -1[y(x) = c]`` (default ``c = 3``): at strength ``lambda`` the odds of a
  ``c`` rise by ``exp(lambda)``. The class shares of generated images are read by a digit
  classifier trained on the real training images; its own error is measured as the total
  variation between its predicted and the true class shares of the held-out real images (the
  classifier's floor).
* **ink**: ``dH(x) = -z(x)``, ``z`` the standardised ink (mean pixel intensity in ``[0, 1]``):
  at ``lambda`` the images get darker strokes on average. The target is the weighted mean ink of
  the training images; at small ``lambda`` the first-order prediction is
  ``<ink>' - <ink> = -lambda Cov_p(ink, dH)``.

Each perturbation is trained at a range of strengths with three schemes that should learn
``p'_N`` (fixed-size batches with weights, adjusted batches, importance resampling), against one
plain model that learns ``p_N``, and :func:`perturbative.tilt.check_tilt` says at which strengths
the weights are too uneven to trust.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from perturbative._core.extras import require
from perturbative._core.io import write_json
from perturbative.demos.diffusion import (
    DenoiserRun,
    denoiser_settings,
    sample_denoiser,
    train_denoiser,
)
from perturbative.tilt import TiltWarning, check_tilt, first_order_shift, tilt_weights

SCHEMES = ("weighted", "adjusted", "resample")
PERTURBATIONS = ("class", "ink")


@dataclass
class DigitsTiltConfig:
    """Settings of the digits tilt demo; each default says why.

    Attributes:
        out_dir: where the pictures and ``tilt_digits.json`` go.
        tilted_class: the digit whose share the class perturbation raises.
        class_strengths: ``lambda`` of the class perturbation, up to where digit ``c`` makes
            about 94% of ``p'_N``. The diagnostics never warn here: as ``lambda`` grows,
            ``p'_N`` tends to the uniform distribution over the training ``c``s, whose effective
            sample size is their number (a tenth of the data) with no example above 1%.
        ink_strengths: ``lambda`` of the ink perturbation (``dH = -z``, ``z`` standardised):
            for a Gaussian ``z``, ``ESS/N = exp(-lambda^2)`` falls below a tenth at 1.5.
        small_ink_strength: the strength of the first-order check of the ink mean.
        heldout_fraction: real images kept from training, to measure the classifier's floor.
        steps: Adam steps per diffusion model: 4000 draw recognisable digits with this MLP
            in a few seconds each on a CPU core.
        batch_size: ``B_avg``, ordinary examples per step.
        lr: Adam's learning rate, with cosine decay.
        hidden: width of the denoiser's three hidden layers.
        diffusion_steps: ``T`` noise levels.
        num_samples: images generated per model: the ink mean's standard error is then about
            ``0.1 / sqrt(2000) ~ 0.002``.
        seed: seed of the split, the models, the batches and the sampling.
    """

    out_dir: Path = Path("runs/tilt_digits")
    tilted_class: int = 3
    class_strengths: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    ink_strengths: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)
    small_ink_strength: float = 0.25
    heldout_fraction: float = 0.2
    steps: int = 4000
    batch_size: int = 128
    lr: float = 2e-3
    hidden: int = 256
    diffusion_steps: int = 100
    num_samples: int = 2000
    seed: int = 0
    schemes: tuple[str, ...] = field(default=SCHEMES)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.class_strengths = tuple(float(s) for s in self.class_strengths)
        self.ink_strengths = tuple(float(s) for s in self.ink_strengths)
        self.schemes = tuple(self.schemes)
        unknown = sorted(set(self.schemes) - set(SCHEMES))
        if unknown:
            raise ValueError(f"unknown schemes {unknown}; choose from {SCHEMES}")
        if not 0 <= self.tilted_class <= 9:
            raise ValueError(f"tilted_class must be a digit 0-9, got {self.tilted_class}")
        for name in ("steps", "batch_size", "hidden", "diffusion_steps", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class DigitImages:
    """The digits split for the demo: images in ``[-1, 1]`` as ``(N, 64)`` float32, labels."""

    train: Tensor
    train_labels: Tensor
    heldout: Tensor
    heldout_labels: Tensor


def load_digit_images(heldout_fraction: float, seed: int) -> DigitImages:
    """scikit-learn's digits, flattened and scaled to ``[-1, 1]``, split at random."""
    load_digits = require("sklearn.datasets", "the digits tilt demo").load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float32) / 8.0 - 1.0
    y = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(round(len(x) * (1 - heldout_fraction)))
    return DigitImages(x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]])


def ink(images: Tensor) -> Tensor:
    """Mean pixel intensity in ``[0, 1]`` of ``(n, 64)`` images in ``[-1, 1]`` (clipped)."""
    return ((images.clamp(-1, 1) + 1) / 2).mean(1)


class DigitClassifier:
    """Multinomial logistic regression on the pixels: how generated images are read."""

    def __init__(self, images: Tensor, labels: Tensor, seed: int = 0) -> None:
        linear = require("sklearn.linear_model", "the digits tilt demo's classifier")
        LogisticRegression = linear.LogisticRegression

        self.model = LogisticRegression(max_iter=2000, C=0.5, random_state=seed)
        self.model.fit(images.clamp(-1, 1).numpy(), labels.numpy())

    def predict(self, images: Tensor) -> np.ndarray:
        return self.model.predict(images.clamp(-1, 1).numpy())

    def shares(self, images: Tensor) -> np.ndarray:
        """Predicted class shares ``(10,)`` of ``images``."""
        return class_shares(self.predict(images))


def class_shares(labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Shares ``(10,)`` of each digit among ``labels``, optionally weighted."""
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    counts = np.bincount(np.asarray(labels), weights=weights, minlength=10)
    return counts / counts.sum()


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """``(1/2) sum |p - q|`` of two distributions over the same classes."""
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


def delta_h(kind: str, data: DigitImages, tilted_class: int) -> Tensor:
    """``dH`` of the training images (float64 ``(N,)``) for a perturbation kind."""
    if kind == "class":
        return -(data.train_labels == tilted_class).double()
    z = ink(data.train).double()
    return -(z - z.mean()) / z.std()


def train_scheme(
    data: DigitImages, weights: Tensor | None, scheme: str, config: DigitsTiltConfig, bar
) -> DenoiserRun:
    """One diffusion model of the training images, plain (``weights=None``) or tilted."""
    return train_denoiser(
        data.train,
        weights,
        batching="plain" if weights is None else scheme,
        **denoiser_settings(config),
        point_frequencies=0,
        on_step=lambda: bar.update(1),
    )


def measure(
    kind: str,
    samples: Tensor,
    classifier: DigitClassifier,
    target_shares: np.ndarray,
    target_ink: float,
) -> dict[str, float]:
    """The generated statistic against its exact target: total variation of the class shares
    (class) or the ink mean, its standard error and distance in standard errors (ink)."""
    shares = classifier.shares(samples)
    generated_ink = ink(samples).double()
    mean = float(generated_ink.mean())
    error = float(generated_ink.std() / math.sqrt(len(generated_ink)))
    out = {
        "class_tv": total_variation(shares, target_shares),
        "target_share": float(target_shares[np.argmax(target_shares)]),
        "ink_mean": mean,
        "ink_standard_error": error,
        "ink_target": target_ink,
        "ink_z": (mean - target_ink) / error if error > 0 else math.nan,
        "shares": shares.tolist(),
    }
    out["distance"] = out["class_tv"] if kind == "class" else abs(mean - target_ink)
    return out


def run_digits_tilt(config: DigitsTiltConfig, progress: bool = False) -> dict[str, Any]:
    """Train plain and tilted diffusion models of the digits and measure them against
    ``p'_N``; writes pictures and ``tilt_digits.json`` into ``config.out_dir``.

    Returns:
        The dict written to ``tilt_digits.json``: the classifier's accuracy and floor, the plain
        model, and for each perturbation and strength the diagnostics of the weights and each
        scheme's generated statistic against its exact target (with the gradient-norm
        variation of its training), and the first-order check of the ink mean.
    """
    start = time.perf_counter()
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data = load_digit_images(config.heldout_fraction, config.seed)
    classifier = DigitClassifier(data.train, data.train_labels, config.seed)
    heldout_predicted = classifier.predict(data.heldout)
    floor = total_variation(
        class_shares(heldout_predicted), class_shares(data.heldout_labels.numpy())
    )
    train_ink = ink(data.train).double()
    labels = data.train_labels.numpy()
    models = 1 + len(config.schemes) * (len(config.class_strengths) + len(config.ink_strengths))
    bar = tqdm(total=models * config.steps, desc="tilt digits", unit="step", disable=not progress)
    generator = torch.Generator().manual_seed(config.seed + 10)

    plain = train_scheme(data, None, "plain", config, bar)
    plain_samples = sample_denoiser(plain.model, config.num_samples, generator)
    grids = {"plain": plain_samples[:64]}
    result: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "classifier": {
            "heldout_accuracy": float(np.mean(heldout_predicted == data.heldout_labels.numpy())),
            "floor_class_tv": floor,
        },
        "plain": {
            "shares": classifier.shares(plain_samples).tolist(),
            "ink_mean": float(ink(plain_samples).mean()),
            "gradient_norm_cv": gradient_norm_cv(plain),
            "data_shares": class_shares(labels).tolist(),
            "data_ink_mean": float(train_ink.mean()),
            # the model's own floor: how far the plain model is from p_N itself
            "class_tv_to_data": total_variation(
                classifier.shares(plain_samples), class_shares(labels)
            ),
            "ink_bias_to_data": float(ink(plain_samples).mean() - train_ink.mean()),
        },
        "perturbations": {},
    }
    for kind in PERTURBATIONS:
        strengths = config.class_strengths if kind == "class" else config.ink_strengths
        dH = delta_h(kind, data, config.tilted_class)
        rows = []
        for strength in strengths:
            weights = tilt_weights(dH, strength)
            target_shares = class_shares(labels, weights.numpy())
            target_ink = float((weights * train_ink).sum() / weights.sum())
            # recorded, not warned: finding where the weights stop being trusted is the point
            diagnostics = check_tilt(weights, target_batch_size=config.batch_size, warn=False)
            row = {
                "strength": strength,
                "diagnostics": diagnostics.as_dict(),
                "trusted": not diagnostics.problems,
                "plain": measure(kind, plain_samples, classifier, target_shares, target_ink),
                "schemes": {},
            }
            for scheme in config.schemes:
                with warnings.catch_warnings():
                    # the sampler's warning about heavy examples is in `diagnostics` already
                    warnings.simplefilter("ignore", TiltWarning)
                    run = train_scheme(data, weights.float(), scheme, config, bar)
                samples = sample_denoiser(run.model, config.num_samples, generator)
                grids[f"{kind} lambda={strength:g} {scheme}"] = samples[:64]
                measured = measure(kind, samples, classifier, target_shares, target_ink)
                row["schemes"][scheme] = {
                    **measured,
                    **ink_shift(measured, row["plain"], float(train_ink.mean())),
                    "gradient_norm_cv": gradient_norm_cv(run),
                    "adjusted_size_std": float(np.std(run.adjusted_sizes)),
                }
            rows.append(row)
        result["perturbations"][kind] = rows
    bar.close()
    result["first_order_ink"] = first_order_ink(result, data, config)
    result["largest_trusted"] = largest_trusted(result)
    result["seconds"] = time.perf_counter() - start
    write_pictures(out, result, grids, config)
    write_json(out / "tilt_digits.json", result, indent=1)
    return result


def ink_shift(measured: dict, plain: dict, data_ink: float) -> dict[str, float]:
    """The tilt's shift of the ink mean, corrected for the model's own bias: the tilted model's
    ink minus the plain model's, against the target's minus the training data's. A model that
    draws slightly bolder digits than its data (both models do) has the same bias tilted or not;
    this compares what the tilt moved."""
    shift = measured["ink_mean"] - plain["ink_mean"]
    target = measured["ink_target"] - data_ink
    error = math.hypot(measured["ink_standard_error"], plain["ink_standard_error"])
    return {
        "ink_shift": shift,
        "ink_target_shift": target,
        "ink_shift_z": (shift - target) / error if error > 0 else math.nan,
    }


def gradient_norm_cv(run: DenoiserRun) -> float:
    """Coefficient of variation of the gradient norm over the second half of training (after
    the loss has settled), the quantity the adjusted batch size is meant to steady."""
    norms = run.grad_norms[len(run.grad_norms) // 2 :]
    return float(np.std(norms) / np.mean(norms))


def first_order_ink(result: dict, data: DigitImages, config: DigitsTiltConfig) -> dict:
    """``-lambda Cov_p(ink, dH)`` at the smallest ink strength, against the exact shift of the
    weighted training set and the shift each scheme's model produced (relative to plain)."""
    strength = config.small_ink_strength
    row = next(
        (r for r in result["perturbations"]["ink"] if r["strength"] == strength),
        None,
    )
    dH = delta_h("ink", data, config.tilted_class)
    train_ink = ink(data.train).double()
    predicted = strength * first_order_shift(train_ink, dH)
    weights = tilt_weights(dH, strength)
    exact = float((weights * train_ink).sum() / weights.sum() - train_ink.mean())
    out = {"strength": strength, "predicted": float(predicted), "exact_on_data": exact}
    if row is not None:
        plain = result["plain"]["ink_mean"]
        out["measured"] = {s: v["ink_mean"] - plain for s, v in row["schemes"].items()}
        out["measured_standard_error"] = {
            s: math.sqrt(2) * v["ink_standard_error"] for s, v in row["schemes"].items()
        }
    return out


def largest_trusted(result: dict) -> dict:
    """Per perturbation: the largest strength whose weights ``check_tilt`` accepts, and each
    scheme's distance to the target there."""
    out = {}
    for kind, rows in result["perturbations"].items():
        trusted = [r for r in rows if r["trusted"]]
        if trusted:
            row = trusted[-1]
            out[kind] = {
                "strength": row["strength"],
                "plain": row["plain"]["distance"],
                **{s: v["distance"] for s, v in row["schemes"].items()},
            }
    return out


def write_pictures(out: Path, result: dict, grids: dict[str, Tensor], config) -> None:
    """``tilt_digits_distance.png`` (distance to the target against strength, untrusted
    strengths shaded) and ``tilt_digits_class.png``, ``tilt_digits_ink.png`` (generated digits
    per scheme and strength)."""
    Figure = require("matplotlib.figure", "the digits tilt demo's figure").Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for n, kind in enumerate(PERTURBATIONS):
        rows = result["perturbations"][kind]
        ax = fig.add_subplot(1, 2, n + 1)
        x = [r["strength"] for r in rows]
        ax.plot(x, [r["plain"]["distance"] for r in rows], "k--", label="plain model")
        for scheme in config.schemes:
            ax.plot(x, [r["schemes"][scheme]["distance"] for r in rows], "o-", label=scheme)
        if kind == "class":
            floor = result["classifier"]["floor_class_tv"]
            ax.axhline(floor, color="grey", lw=0.8, label="classifier floor")
            own = result["plain"]["class_tv_to_data"]
            ax.axhline(own, color="grey", ls=":", label="plain model to p_N")
            ax.set_ylabel(f"total variation of class shares to p'_N (digit {config.tilted_class})")
        else:
            own = abs(result["plain"]["ink_bias_to_data"])
            ax.axhline(own, color="grey", ls=":", label="plain model to p_N")
            ax.set_ylabel("|generated ink mean - target|")
        half = 0.25 * (max(x) - min(x)) / max(len(x) - 1, 1)
        for r in rows:
            if not r["trusted"]:
                ax.axvspan(r["strength"] - half, r["strength"] + half, color="red", alpha=0.12)
        ax.set_xlabel("tilt strength lambda (red: check_tilt warns)")
        ax.set_title(f"{kind} tilt: distance to the exact target")
        ax.legend(fontsize=8)
    fig.savefig(out / "tilt_digits_distance.png", dpi=110)

    for kind in PERTURBATIONS:
        strengths = config.class_strengths if kind == "class" else config.ink_strengths
        columns = ["plain", *strengths]
        fig = Figure(figsize=(1.5 * len(columns), 1.7 * len(config.schemes)), layout="constrained")
        for r, scheme in enumerate(config.schemes):
            for c, strength in enumerate(columns):
                key = "plain" if strength == "plain" else f"{kind} lambda={strength:g} {scheme}"
                ax = fig.add_subplot(len(config.schemes), len(columns), r * len(columns) + c + 1)
                ax.imshow(_tile(grids[key][:16], columns=4), cmap="gray_r", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title("plain" if strength == "plain" else f"lambda {strength:g}")
                if c == 0:
                    ax.set_ylabel(scheme)
        fig.suptitle(f"generated digits, {kind} tilt", fontsize=10)
        fig.savefig(out / f"tilt_digits_{kind}.png", dpi=100)


def _tile(images: Tensor, columns: int = 8) -> np.ndarray:
    """``(n, 64)`` images -> one ``(8 r + r - 1, 8 c + c - 1)`` mosaic with 1-pixel gaps."""
    images = images.clamp(-1, 1).reshape(-1, 8, 8).numpy()
    rows = math.ceil(len(images) / columns)
    mosaic = np.full((9 * rows - 1, 9 * columns - 1), -1.0)
    for n, image in enumerate(images):
        r, c = divmod(n, columns)
        mosaic[9 * r : 9 * r + 8, 9 * c : 9 * c + 8] = image
    return mosaic


def summary_lines(result: dict) -> list[str]:
    """The demo's figures as printable lines."""
    c = result["classifier"]
    lines = [
        f"classifier: held-out accuracy {c['heldout_accuracy']:.3f}, its floor (total variation "
        f"of predicted to true held-out class shares) {c['floor_class_tv']:.3f}",
        f"plain model against p_N itself (the model's own floor): class-share TV "
        f"{result['plain']['class_tv_to_data']:.3f}, ink bias "
        f"{result['plain']['ink_bias_to_data']:+.4f}; gradient-norm CV "
        f"{result['plain']['gradient_norm_cv']:.3f}",
    ]
    for kind, rows in result["perturbations"].items():
        unit = "class-share TV" if kind == "class" else "|ink mean - target| (in SE)"
        lines.append(f"{kind} tilt: {unit} to the exact p'_N target")
        for r in rows:
            d = r["diagnostics"]
            cells = []
            for scheme, v in [("plain", r["plain"]), *r["schemes"].items()]:
                if kind == "class":
                    cells.append(f"{scheme} {v['class_tv']:.3f}")
                elif "ink_shift" in v:
                    cells.append(
                        f"{scheme} {abs(v['ink_mean'] - v['ink_target']):.4f} "
                        f"({abs(v['ink_z']):.1f}; shift {v['ink_shift']:+.4f} vs "
                        f"{v['ink_target_shift']:+.4f}, {abs(v['ink_shift_z']):.1f} SE)"
                    )
                else:
                    cells.append(
                        f"{scheme} {abs(v['ink_mean'] - v['ink_target']):.4f} "
                        f"({abs(v['ink_z']):.1f})"
                    )
            trust = "ok" if r["trusted"] else "WARN"
            lines.append(
                f"  lambda {r['strength']:<5g} ESS/N {d['ess_fraction']:.2f} max share "
                f"{d['max_weight_share']:.4f} [{trust}]  " + ", ".join(cells)
            )
        cvs = (
            {
                s: np.mean([r["schemes"][s]["gradient_norm_cv"] for r in rows])
                for s in rows[0]["schemes"]
            }
            if rows
            else {}
        )
        lines.append(
            "  gradient-norm CV (mean over strengths): "
            + ", ".join(f"{s} {v:.3f}" for s, v in cvs.items())
        )
    f = result["first_order_ink"]
    if "measured" in f:
        lines.append(
            f"first order, ink at lambda {f['strength']:g}: predicted {f['predicted']:+.4f}, "
            f"exact on the data {f['exact_on_data']:+.4f}, models "
            + ", ".join(
                f"{s} {v:+.4f} +- {f['measured_standard_error'][s]:.4f}"
                for s, v in f["measured"].items()
            )
        )
    lines.append(f"took {result['seconds']:.0f} s")
    return lines
