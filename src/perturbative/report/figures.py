"""The report's pictures: matplotlib figures and images as PNG data URIs (no files, no network)."""

from __future__ import annotations

import base64
import io
import math

import numpy as np

from perturbative._core.extras import require
from perturbative.pipeline.order_records import OrderCheckRecord
from perturbative.pipeline.phase_records import PhaseCheckRecord
from perturbative.report.statistics import (
    NormCorrelation,
    ReportData,
    layer_rms_table,
    norm_product,
)


def outside_legend(ax, fontsize: float = 8) -> None:
    """The legend beside the axes, never over the points (the saved figure grows to hold it)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=fontsize)


def png_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_uri(image: np.ndarray) -> str:
    """``(C, H, W)`` in ``[0, 1]`` -> PNG data URI (grey for one channel, else the first three)."""
    Image = require("PIL.Image", "an image thumbnail in the report")

    pixels = np.clip(np.nan_to_num(image) * 255 + 0.5, 0, 255).astype(np.uint8)
    picture = (
        Image.fromarray(pixels[0])
        if pixels.shape[0] < 3
        else Image.fromarray(np.ascontiguousarray(pixels[:3].transpose(1, 2, 0)))
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def plain_text(text: str) -> str:
    """Text matplotlib draws literally (a ``$`` would otherwise start mathtext)."""
    return text.replace("$", r"\$")


def report_figures(data: ReportData, fit: NormCorrelation, corr: np.ndarray, top: list) -> dict:
    Figure = require("matplotlib.figure", "the report's figures").Figure

    plots = {}
    names, steps = data.attribute_names, data.steps
    product = norm_product(data.grad_norm, data.pairs)
    fig = Figure(figsize=(6.0, 4.4), layout="constrained")
    ax = fig.add_subplot()
    colours = np.broadcast_to(steps[:, None], product.shape)
    ok = (product > 0) & (data.bracket_norm > 0)
    dots = ax.scatter(product[ok], data.bracket_norm[ok], c=colours[ok], s=12, cmap="viridis")
    if math.isfinite(fit.slope):
        xs = np.geomspace(product[ok].min(), product[ok].max(), 50)
        ax.plot(xs, np.exp(fit.intercept) * xs**fit.slope, "k--", lw=1, label="least squares")
        outside_legend(ax)
    ax.set(xscale="log", yscale="log", xlabel="|g_i| |g_j|", ylabel="|[v_i, v_j]|")
    ax.set_title(f"Pearson r (log-log) = {fit.pearson:.3f}, slope = {fit.slope:.2f}")
    fig.colorbar(dots, ax=ax, label="step")
    plots["norms"] = png_uri(fig)
    layers = layer_rms_table(data)
    if layers:
        plots["layers"] = _layers_plot(layers, data.steps, Figure)

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, np.median(data.bracket_norm, axis=1), "o-", label="median |[v_i, v_j]|")
    ax.plot(steps, np.median(product, axis=1), "s-", label="median |g_i| |g_j|")
    if data.cancellation.size:
        ax.plot(steps, np.median(data.cancellation, axis=1), "^-", label="median cancellation")
    ax.set(yscale="log", xlabel="step", title="norms over training")
    outside_legend(ax)
    plots["norms_steps"] = png_uri(fig)

    if data.tokens is None:
        plots.update(_comovement_plots(names, steps, corr, top, Figure))
    if data.metrics:
        fig = Figure(figsize=(6.0, 3.6), layout="constrained")
        ax = fig.add_subplot()
        rows = sorted(data.metrics, key=lambda r: r["step"])
        ax.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], label="train loss")
        for step in steps:
            ax.axvline(step, color="grey", lw=0.4)
        ax.set(xlabel="step (grey: checkpoints)", ylabel="train loss")
        held = [(r["step"], r["heldout_accuracy"]) for r in rows if "heldout_accuracy" in r]
        if held:
            twin = ax.twinx()
            twin.plot(*zip(*held, strict=True), "C1o-", ms=3, label="held-out accuracy")
            twin.set_ylabel("held-out accuracy", color="C1")
        plots["metrics"] = png_uri(fig)
    if data.order_check:
        plots.update(order_check_figures(data.order_check))
    return plots


def _comovement_plots(names: list[str], steps: np.ndarray, corr: np.ndarray, top: list, Figure):
    """The strongest pairs' co-movement over training, and the matrix at the last step."""
    plots = {}
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    a, b = np.triu_indices(len(names), k=1)
    if len(a):
        ax.plot(
            steps, np.median(np.abs(corr[:, a, b]), axis=1), "k:", label="median |r|, all pairs"
        )
    for n, (p, q) in enumerate(top[:5]):
        label = plain_text(f"{names[p][:28]} / {names[q][:28]}")
        ax.plot(steps, corr[:, p, q], "o-", lw=2.5 if n == 0 else 1, label=label)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="step", ylabel="correlation r of output shifts", ylim=(-1.05, 1.05))
    if len(a):
        outside_legend(ax, fontsize=8)
    plots["comovement"] = png_uri(fig)

    size = min(7.0, 3.0 + 0.12 * len(names))
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(corr[-1], cmap="RdBu_r", vmin=-1, vmax=1)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, [plain_text(n[:24]) for n in names], rotation=90, fontsize=6)
    ax.set_yticks(ticks, [plain_text(n[:24]) for n in names], fontsize=6)
    ax.set_title(f"co-movement at step {steps[-1]}")
    fig.colorbar(image, ax=ax, label="r")
    plots["comovement_matrix"] = png_uri(fig)

    return plots


def _layers_plot(rows: list[dict], steps: np.ndarray, Figure) -> str:
    """Bracket and gradient RMS of each parameter tensor, in the model's order, log scale."""
    height = 1.2 + 0.16 * len(rows)
    fig = Figure(figsize=(6.4, height), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for key, marker, label in (
        ("bracket_last", "o", f"bracket RMS, step {steps[-1]}"),
        ("bracket_first", ".", f"bracket RMS, step {steps[0]}"),
        ("grad_last", "x", f"gradient RMS, step {steps[-1]}"),
    ):
        values = np.array([r[key] for r in rows], dtype=np.float64)
        ok = values > 0
        ax.scatter(values[ok], y[ok], marker=marker, s=14, label=label)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=6 if len(rows) > 30 else 8)
    ax.set(xscale="log", xlabel="RMS over the tensor's entries", title="per parameter tensor")
    outside_legend(ax, fontsize=7)
    return png_uri(fig)


def order_check_figures(check: OrderCheckRecord) -> dict:
    """Predicted against real swap differences at ``h = 0`` (run's lr), and sign accuracy
    against the horizon and against the lr scale."""
    Figure = require("matplotlib.figure", "the report's figures").Figure

    plots = {}
    fig = Figure(figsize=(6.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    everything = []
    for n, entry in enumerate(check.checkpoints):
        scale = entry.at_run_lr()
        for kind, marker in (("example", "o"), ("batch", "s"), ("exchange", "^")):
            pairs = [p for p in scale.pairs if p.kind == kind] if scale else []
            x = np.array([p.predicted for p in pairs])
            y = np.array([p.real_at(0) for p in pairs])
            everything.extend(np.abs(np.concatenate([x, y])).tolist())
            ax.scatter(
                x,
                y,
                s=10,
                marker=marker,
                color=f"C{n}",
                alpha=0.6,
                label=f"step {entry.step}, {kind} pairs",
            )
    top = max(everything, default=1.0) or 1.0
    ax.plot([-top, top], [-top, top], "k--", lw=0.8, label="real = predicted")
    linear = float(np.quantile(everything, 0.1)) if everything else 1e-6
    ax.set(
        xscale="symlog",
        yscale="symlog",
        xlabel="predicted O(x then y) - O(y then x)",
        ylabel="real difference (h = 0)",
        title="swaps at the run's lr",
    )
    ax.set_xscale("symlog", linthresh=max(linear, 1e-12))
    ax.set_yscale("symlog", linthresh=max(linear, 1e-12))
    ax.tick_params(labelsize=7)
    ax.tick_params(axis="x", labelrotation=35)  # symlog labels of both signs would overlap
    outside_legend(ax, fontsize=7)
    plots["order_scatter"] = png_uri(fig)
    scales = [entry.at_run_lr() for entry in check.checkpoints if entry.at_run_lr()]
    several_horizons = any(len(s.summary.rows("all")) > 1 for s in scales)
    several_lrs = any(len(entry.scales) > 1 for entry in check.checkpoints)
    if several_horizons:
        plots["order_horizon"] = _horizon_plot(check, Figure)
    if several_lrs:
        plots["order_lr"] = _lr_plot(check, Figure)
    return plots  # a plot with a single point on its axis is left out


def _horizon_plot(check: OrderCheckRecord, Figure) -> str:
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for n, entry in enumerate(check.checkpoints):
        scale = entry.at_run_lr()
        rows = scale.summary.rows("all") if scale else []
        h = [r.horizon for r in rows]
        ax.plot(
            h,
            [_nan(r.accuracy) for r in rows],
            "o-",
            color=f"C{n}",
            label=f"step {entry.step}: prediction",
        )
        ax.plot(
            h,
            [_nan(r.baselines.h0_prediction) for r in rows],
            "x:",
            color=f"C{n}",
            label=f"step {entry.step}: sign of the h = 0 prediction",
        )
    _accuracy_axes(ax, "symlog", "further identical steps h", "accuracy against horizon (run's lr)")
    return png_uri(fig)


def _lr_plot(check: OrderCheckRecord, Figure) -> str:
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for n, entry in enumerate(check.checkpoints):
        for kind, style in (("example", "o-"), ("batch", "s--"), ("exchange", "^:")):
            points = sorted(
                (s.lr, _nan(s.summary.rows(kind)[0].accuracy))
                for s in entry.scales
                if s.summary.rows(kind)
            )
            ax.plot(
                *zip(*points, strict=True),
                style,
                color=f"C{n}",
                label=f"step {entry.step}, {kind} pairs",
            )
    _accuracy_axes(
        ax, "log", "learning rate of the swapped steps (h = 0)", "where the expansion holds"
    )
    return png_uri(fig)


def phase_check_figures(check: PhaseCheckRecord) -> dict:
    """The phase check (``phase_check.json``): sign accuracy against the phase length ``k`` per
    method, and the composition's predicted against real differences, for the first target."""
    Figure = require("matplotlib.figure", "the report's figures").Figure

    target = check.targets[0]
    by_k = check.summary.rows.get(target, {})
    if not by_k:
        return {}
    ks = list(by_k)
    methods = list(next(iter(by_k.values())).methods)
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for n, method in enumerate(methods):
        values = [
            _nan(m.sign_accuracy_above_floor if (m := by_k[k].methods.get(method)) else None)
            for k in ks
        ]
        style = ":" if method in ("coin", "larger-gradient-first", "larger-loss-first") else "-"
        ax.plot(ks, values, "o" + style, color=f"C{n}", label=method)
    _accuracy_axes(
        ax, "log" if len(ks) > 1 else "linear", "batches per phase k", f"phase orders: {target}"
    )
    plots = {"phase_accuracy": png_uri(fig)}
    fig = Figure(figsize=(6.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    everything = []
    for n, k in enumerate(ks):
        x, y = [], []
        for record in check.tournaments:
            if record.k != k or "composition" not in record.predicted:
                continue
            upper = np.triu_indices(len(record.sources), 1)
            x.extend(np.asarray(record.predicted["composition"][target])[upper].tolist())
            y.extend(np.asarray(record.real[target])[upper].tolist())
        everything.extend(np.abs(x + y).tolist())
        ax.scatter(x, y, s=10, color=f"C{n}", alpha=0.7, label=f"k = {k}")
    top = max(everything, default=1.0) or 1.0
    ax.plot([-top, top], [-top, top], "k--", lw=0.8, label="real = predicted")
    linear = max(float(np.quantile(everything, 0.1)) if everything else 1e-6, 1e-12)
    ax.set_xscale("symlog", linthresh=linear)
    ax.set_yscale("symlog", linthresh=linear)
    ax.set(
        xlabel="predicted O(A then B) - O(B then A) (composition)",
        ylabel="real difference",
        title="phase pairs, predicted against really trained",
    )
    ax.tick_params(labelsize=7)
    ax.tick_params(axis="x", labelrotation=35)
    outside_legend(ax, fontsize=7)
    plots["phase_scatter"] = png_uri(fig)
    return plots


def _accuracy_axes(ax, xscale: str, xlabel: str, title: str) -> None:
    """Sign accuracy on ``[0, 1]`` with the coin's 0.5 drawn in."""
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.set(xscale=xscale, xlabel=xlabel, ylabel="sign accuracy", ylim=(0, 1.02), title=title)
    outside_legend(ax, fontsize=7)


def _nan(value):
    return math.nan if value is None else value
