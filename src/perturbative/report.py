"""Results files of a bracket sweep -> one self-contained HTML report.

The report reads only the files documented in ``docs/results-format.md`` (and, if present, the
run's ``metrics.jsonl`` one level above ``brackets/``); it never recomputes brackets. What it does
compute are summary statistics of those numbers:

* the log-log correlation of bracket norms with gradient norms: Pearson and Spearman correlation
  of ``log |[v_i, v_j]|`` with ``log(|g_i| |g_j|)`` over all pairs and checkpoints, and the slope
  of the least-squares line;
* attribute co-movement: at each checkpoint, the ``K x K`` Pearson correlation between
  attributes of the output shifts ``lr^2 J_f [v_i, v_j]`` taken over (pairs x test examples);
* a per-parameter-tensor RMS table of the brackets and gradients.

The HTML holds its data as inline JSON, its plots as base64 PNG data URIs and its code as
vanilla JavaScript, so it works offline and from a ``file://`` URL.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
_REQUIRED_META = ("format_version", "attribute_names", "steps", "bracket_examples", "pairs")
_REQUIRED_STEP = ("output_shift", "outputs", "targets", "grad_norm", "bracket_norm")
_RERUN = "rerun `perturbative brackets` on the training run (it resumes finished checkpoints)"


@dataclass
class ReportData:
    """The numbers of one results directory, stacked over the ``S`` checkpoint steps.

    Attributes:
        results_dir: the ``brackets/`` directory that was read.
        meta: ``meta.json`` as a dict.
        steps: ``(S,)`` checkpoint steps, ascending.
        attribute_names: ``K`` output names.
        pairs: ``(P, 2)`` bracket pairs ``(i, j)`` with ``i < j``.
        output_shift: ``(S, P, T, K)`` output shifts ``lr^2 J_f [v_i, v_j]``.
        outputs: ``(S, T, K)`` the model's outputs (logits).
        targets: ``(T, K)`` targets of the test batch.
        grad_norm: ``(S, B)`` gradient norms ``|g_i|``.
        bracket_norm: ``(S, P)`` bracket norms ``|[v_i, v_j]|``.
        cancellation: ``(S, P)`` ``|[v_i, v_j]| / (|H_j g_i| + |H_i g_j|)`` (NaN if absent).
        bracket_layer_rms: ``(S, P, L)`` RMS of each bracket per parameter tensor, or None.
        grad_layer_rms: ``(S, B, L)`` RMS of each gradient per parameter tensor, or None.
        test_indices: ``(T,)`` dataset indices of the test batch, or None.
        thumbnails: ``(B', C, H, W)`` images in ``[0, 1]`` of the bracket examples, or None.
        metrics: rows of ``metrics.jsonl`` (dicts with ``step`` and ``train_loss``), or None.
        ranking_indices: ``(S, M)`` training indices, most order-sensitive first, or None.
        ranking_scores: ``(S, M)`` their order-sensitivity scores, or None.
    """

    results_dir: Path
    meta: dict
    steps: np.ndarray
    attribute_names: list[str]
    pairs: np.ndarray
    output_shift: np.ndarray
    outputs: np.ndarray
    targets: np.ndarray
    grad_norm: np.ndarray
    bracket_norm: np.ndarray
    cancellation: np.ndarray
    bracket_layer_rms: np.ndarray | None
    grad_layer_rms: np.ndarray | None
    test_indices: np.ndarray | None
    thumbnails: np.ndarray | None
    metrics: list[dict] | None
    ranking_indices: np.ndarray | None = None
    ranking_scores: np.ndarray | None = None


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ValueError(
            f"could not read {path} ({error}): the file is corrupt or truncated; "
            f"delete it and {_RERUN}"
        ) from error


def _read_metrics(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written by a running training
        if isinstance(row, dict) and "step" in row and "train_loss" in row:
            rows.append(row)
    return rows or None


def load_report_data(results_dir: Path | str) -> ReportData:
    """Read and check a results directory (the run directory or its ``brackets/``).

    Raises:
        FileNotFoundError: no results there, or a step file listed in ``meta.json`` is missing.
        ValueError: a file is corrupt or does not match ``docs/results-format.md``.
    """
    results_dir = Path(results_dir)
    if not (results_dir / "meta.json").exists() and (results_dir / "brackets/meta.json").exists():
        results_dir = results_dir / "brackets"
    meta_path = results_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"no bracket results in {results_dir} ({meta_path.name} not found): run "
            "`perturbative brackets` on the training run first, then pass its brackets/ directory"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta_path} is not valid JSON ({error}); {_RERUN}") from error
    missing = [key for key in _REQUIRED_META if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise ValueError(f"{meta_path} lacks {missing}; {_RERUN}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has format_version {meta['format_version']!r}, this report reads "
            f"version {FORMAT_VERSION}; rerun the sweep with this version of perturbative"
        )
    steps = sorted(int(s) for s in meta["steps"])
    if not steps:
        raise ValueError(f"{meta_path} lists no finished checkpoint; {_RERUN}")
    per_step = []
    for step in steps:
        path = results_dir / f"step_{step:06d}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in meta.json but missing; {_RERUN}")
        tensors = _read_tensors(path)
        absent = [key for key in _REQUIRED_STEP if key not in tensors]
        if absent:
            raise ValueError(f"{path} lacks {absent}; {_RERUN}")
        per_step.append(tensors)

    def stack(key: str) -> np.ndarray | None:
        if not all(key in t for t in per_step):
            return None
        shapes = {t[key].shape for t in per_step}
        if len(shapes) != 1:
            raise ValueError(f"{key} changes shape between step files {shapes}; {_RERUN}")
        return np.stack([t[key].astype(np.float64) for t in per_step])

    names = [str(n) for n in meta["attribute_names"]]
    pairs = np.asarray(meta["pairs"], dtype=np.int64).reshape(-1, 2)
    shift = stack("output_shift")
    b = int(meta["bracket_examples"])
    expected = {
        "output_shift": (len(pairs), shift.shape[2], len(names)),
        "grad_norm": (b,),
        "bracket_norm": (len(pairs),),
    }
    for key, shape in expected.items():
        if per_step[0][key].shape != shape:
            raise ValueError(
                f"{key} has shape {per_step[0][key].shape}, meta.json implies {shape}; {_RERUN}"
            )
    cancellation = stack("cancellation")
    thumbs = None
    if (results_dir / "thumbnails.safetensors").is_file():
        thumbs = _read_tensors(results_dir / "thumbnails.safetensors").get("images")
    test_indices = per_step[0].get("test_indices")
    ranking = stack("ranking_indices")
    return ReportData(
        results_dir=results_dir,
        meta=meta,
        steps=np.asarray(steps, dtype=np.int64),
        attribute_names=names,
        pairs=pairs,
        output_shift=shift,
        outputs=stack("outputs"),
        targets=per_step[0]["targets"].astype(np.float64),
        grad_norm=stack("grad_norm"),
        bracket_norm=stack("bracket_norm"),
        cancellation=cancellation if cancellation is not None else np.full((len(steps), 0), 0.0),
        bracket_layer_rms=stack("bracket_layer_rms"),
        grad_layer_rms=stack("grad_layer_rms"),
        test_indices=None if test_indices is None else test_indices.astype(np.int64),
        thumbnails=thumbs,
        metrics=_read_metrics(results_dir.parent / "metrics.jsonl"),
        ranking_indices=None if ranking is None else ranking.astype(np.int64),
        ranking_scores=stack("ranking_scores") if ranking is not None else None,
    )


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks ``0..n-1`` of ``x`` with ties given their mean rank."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="mergesort")] = np.arange(len(x))
    _, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return float(xc @ yc) / denominator if denominator > 0 else math.nan


@dataclass
class NormCorrelation:
    """How bracket norms follow gradient norms, over all pairs and checkpoints.

    Attributes:
        pearson: Pearson correlation of ``log |[v_i, v_j]|`` and ``log(|g_i| |g_j|)``.
        spearman: Spearman rank correlation of the same (log-free: ranks ignore monotone maps).
        slope: slope of the least-squares line ``log |[v_i, v_j]| ~ a + slope log(|g_i| |g_j|)``.
        intercept: its intercept ``a``.
        count: number of (pair, checkpoint) points with positive finite norms.
    """

    pearson: float
    spearman: float
    slope: float
    intercept: float
    count: int


def norm_product(grad_norm: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``|g_i| |g_j|`` for each pair: ``(S, B)``, ``(P, 2)`` -> ``(S, P)``."""
    return grad_norm[:, pairs[:, 0]] * grad_norm[:, pairs[:, 1]]


def bracket_gradient_correlation(
    grad_norm: np.ndarray, bracket_norm: np.ndarray, pairs: np.ndarray
) -> NormCorrelation:
    """Correlate ``log |[v_i, v_j]|`` with ``log(|g_i| |g_j|)`` over pairs and checkpoints.

    Args:
        grad_norm: ``(S, B)`` gradient norms.
        bracket_norm: ``(S, P)`` bracket norms.
        pairs: ``(P, 2)`` the pair ``(i, j)`` of each column of ``bracket_norm``.

    Returns:
        A :class:`NormCorrelation`; NaN fields when fewer than 3 usable points.
    """
    x, y = norm_product(grad_norm, pairs).ravel(), np.asarray(bracket_norm).ravel()
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = np.log(x[ok]), np.log(y[ok])
    if len(x) < 3:
        return NormCorrelation(math.nan, math.nan, math.nan, math.nan, int(len(x)))
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc)) if xc @ xc > 0 else math.nan
    return NormCorrelation(
        pearson=_pearson(x, y),
        spearman=_pearson(_average_ranks(x), _average_ranks(y)),
        slope=slope,
        intercept=float(y.mean() - slope * x.mean()),
        count=int(len(x)),
    )


def attribute_comovement(output_shift: np.ndarray) -> np.ndarray:
    """Correlation between attributes of the output shifts, one matrix per checkpoint.

    Args:
        output_shift: ``(S, P, T, K)`` shifts ``lr^2 J_f [v_i, v_j]``.

    Returns:
        ``(S, K, K)``: entry ``[s, a, b]`` is the Pearson correlation, over the ``P x T``
        (pair, test example) samples at checkpoint ``s``, of the shifts of attributes ``a`` and
        ``b``. An attribute whose shifts are all equal correlates 0 with the others, 1 with itself.
    """
    s, p, t, k = output_shift.shape
    x = np.nan_to_num(np.asarray(output_shift, dtype=np.float64).reshape(s, p * t, k))
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt((x * x).sum(axis=1))  # (S, K)
    scale = np.where(norms > 0, norms, np.inf)
    corr = np.einsum("snk,snl->skl", x, x) / (scale[:, :, None] * scale[:, None, :])
    corr[:, np.arange(k), np.arange(k)] = 1.0
    return corr


def top_attribute_pairs(corr: np.ndarray, count: int = 10) -> list[tuple[int, int]]:
    """The attribute pairs ``(a, b)``, ``a < b``, with largest mean ``|r|`` over checkpoints.

    Args:
        corr: ``(S, K, K)`` from :func:`attribute_comovement`.
        count: how many pairs.
    """
    a, b = np.triu_indices(corr.shape[1], k=1)
    strength = np.abs(corr[:, a, b]).mean(axis=0)
    order = np.argsort(-strength, kind="stable")[:count]
    return [(int(a[n]), int(b[n])) for n in order]


def layer_rms_table(data: ReportData) -> list[dict]:
    """Per parameter tensor: RMS of brackets and gradients at the first and last checkpoint.

    RMS over pairs (examples) and tensor entries: ``sqrt(mean_p rms_{p,l}^2)``, which is the RMS
    of all bracket entries of tensor ``l`` across the ``P`` brackets.

    Returns:
        One dict per tensor with ``name``, ``size``, ``bracket_first``, ``bracket_last``,
        ``grad_last`` and ``ratio_last`` (bracket over gradient RMS at the last checkpoint).
        Empty when the step files hold no per-tensor arrays.
    """
    if data.bracket_layer_rms is None or data.grad_layer_rms is None:
        return []
    bracket = np.sqrt((data.bracket_layer_rms**2).mean(axis=1))  # (S, L)
    grad = np.sqrt((data.grad_layer_rms**2).mean(axis=1))
    names = list(data.meta.get("param_names") or [])
    sizes = list(data.meta.get("param_sizes") or [])
    rows = []
    for n in range(bracket.shape[1]):
        rows.append(
            {
                "name": str(names[n]) if n < len(names) else f"tensor {n}",
                "size": int(sizes[n]) if n < len(sizes) else None,
                "bracket_first": float(bracket[0, n]),
                "bracket_last": float(bracket[-1, n]),
                "grad_last": float(grad[-1, n]),
                "ratio_last": float(bracket[-1, n] / grad[-1, n]) if grad[-1, n] > 0 else math.nan,
            }
        )
    return rows


# ---------------------------------------------------------------- rendering


def ranking_table(data: ReportData, top: int = 5) -> list[dict]:
    """Per checkpoint: the ``top`` most order-sensitive training examples, the median score, and
    how many of the top 10 were also in the previous checkpoint's top 10 (ranking stability)."""
    if data.ranking_indices is None or data.ranking_indices.shape[1] == 0:
        return []
    rows, previous = [], None
    for step, indices, scores in zip(
        data.steps, data.ranking_indices, data.ranking_scores, strict=True
    ):
        current = set(indices[:10].tolist())
        rows.append(
            {
                "step": int(step),
                "top": [
                    (int(i), float(v)) for i, v in zip(indices[:top], scores[:top], strict=True)
                ],
                "median": float(np.median(scores)),
                "kept": None if previous is None else len(current & previous),
            }
        )
        previous = current
    return rows


def _ranking_html(data: ReportData) -> str:
    rows = ranking_table(data)
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{r['step']}</td><td>"
        + ", ".join(f"#{i} ({_num(v)})" for i, v in r["top"])
        + f"</td><td>{_num(r['median'])}</td><td>{'' if r['kept'] is None else r['kept']}</td></tr>"
        for r in rows
    )
    observable = html.escape(str(data.meta.get("observable", "the observable")))
    m = data.ranking_indices.shape[1]
    return (
        "<h2>Order sensitivity of training examples</h2>"
        f'<p class="hint">{m} training examples ranked by the RMS over partners y of '
        f"u . [v_x, v_y], u the gradient of {observable}: how much moving example x before or "
        "after the others moves it (x lr^2). Computed from the projected bracket matrix "
        "(n gradients + n HVPs per checkpoint).</p>"
        "<table><thead><tr><th>step</th><th>most order-sensitive (training index, score)</th>"
        "<th>median score</th><th>top 10 kept from previous checkpoint</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _sig4(values: np.ndarray) -> list:
    """Flat list of ``values`` rounded to 4 significant digits, non-finite as None (JSON null)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    return [float(v) if math.isfinite(float(v)) else None for v in np.char.mod("%.4g", flat)]


def _scaled(values: np.ndarray) -> dict:
    """``{"m": 10^e, "v": values / 10^e}`` with the largest magnitude in ``[1, 10)``: short JSON."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    scale = 10.0 ** math.floor(math.log10(top)) if top > 0 else 1.0
    return {"m": scale, "v": _sig4(values / scale)}


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_uri(image: np.ndarray) -> str:
    """``(C, H, W)`` in ``[0, 1]`` -> PNG data URI (grey for one channel, else the first three)."""
    from PIL import Image

    pixels = np.clip(np.nan_to_num(image) * 255 + 0.5, 0, 255).astype(np.uint8)
    picture = (
        Image.fromarray(pixels[0])
        if pixels.shape[0] < 3
        else Image.fromarray(np.ascontiguousarray(pixels[:3].transpose(1, 2, 0)))
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plain(text: str) -> str:
    """Text matplotlib draws literally (a ``$`` would otherwise start mathtext)."""
    return text.replace("$", r"\$")


def _plots(data: ReportData, fit: NormCorrelation, corr: np.ndarray, top: list) -> dict:
    from matplotlib.figure import Figure

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
        ax.legend(loc="upper left")
    ax.set(xscale="log", yscale="log", xlabel="|g_i| |g_j|", ylabel="|[v_i, v_j]|")
    ax.set_title(f"Pearson r (log-log) = {fit.pearson:.3f}, slope = {fit.slope:.2f}")
    fig.colorbar(dots, ax=ax, label="step")
    plots["norms"] = _png(fig)

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, np.median(data.bracket_norm, axis=1), "o-", label="median |[v_i, v_j]|")
    ax.plot(steps, np.median(product, axis=1), "s-", label="median |g_i| |g_j|")
    if data.cancellation.size:
        ax.plot(steps, np.median(data.cancellation, axis=1), "^-", label="median cancellation")
    ax.set(yscale="log", xlabel="step", title="norms over training")
    ax.legend()
    plots["norms_steps"] = _png(fig)

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    a, b = np.triu_indices(len(names), k=1)
    if len(a):
        ax.plot(
            steps, np.median(np.abs(corr[:, a, b]), axis=1), "k:", label="median |r|, all pairs"
        )
    for n, (p, q) in enumerate(top[:5]):
        label = _plain(f"{names[p][:28]} / {names[q][:28]}")
        ax.plot(steps, corr[:, p, q], "o-", lw=2.5 if n == 0 else 1, label=label)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="step", ylabel="correlation r of output shifts", ylim=(-1.05, 1.05))
    if len(a):
        ax.legend(fontsize=8)
    plots["comovement"] = _png(fig)

    size = min(7.0, 3.0 + 0.12 * len(names))
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(corr[-1], cmap="RdBu_r", vmin=-1, vmax=1)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, [_plain(n[:24]) for n in names], rotation=90, fontsize=6)
    ax.set_yticks(ticks, [_plain(n[:24]) for n in names], fontsize=6)
    ax.set_title(f"co-movement at step {steps[-1]}")
    fig.colorbar(image, ax=ax, label="r")
    plots["comovement_matrix"] = _png(fig)

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
        plots["metrics"] = _png(fig)
    return plots


def _json_for_script(value) -> str:
    """JSON that cannot end or confuse the enclosing ``<script>`` element."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _num(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def write_report(results_dir: Path | str, out_path: Path | str | None = None) -> Path:
    """Write the self-contained HTML report of a bracket sweep.

    Args:
        results_dir: the sweep's ``brackets/`` directory (or the run directory holding it).
        out_path: where to write; default ``<results_dir>/report.html``.

    Returns:
        The path of the written HTML file.
    """
    data = load_report_data(results_dir)
    out_path = Path(out_path) if out_path is not None else data.results_dir / "report.html"
    fit = bracket_gradient_correlation(data.grad_norm, data.bracket_norm, data.pairs)
    corr = attribute_comovement(data.output_shift)
    top = top_attribute_pairs(corr, count=10)
    plots = _plots(data, fit, corr, top)
    s, p, t, k = data.output_shift.shape
    b = int(data.meta["bracket_examples"])
    thumbs = [] if data.thumbnails is None else [_image_uri(im) for im in data.thumbnails[:b]]
    payload = {
        "names": data.attribute_names,
        "steps": data.steps.tolist(),
        "pairs": data.pairs.tolist(),
        "B": b,
        "T": t,
        "K": k,
        "shift": [_scaled(data.output_shift[n]) for n in range(s)],
        "outputs": [_sig4(o) for o in data.outputs] if data.outputs is not None else None,
        "targets": _sig4(data.targets),
        "bracketNorm": [_sig4(x) for x in data.bracket_norm],
        "gradNorm": [_sig4(x) for x in data.grad_norm],
        "cancellation": [_sig4(x) for x in data.cancellation],
        "testIndices": None if data.test_indices is None else data.test_indices.tolist(),
        "thumbs": thumbs,
    }
    e = html.escape
    names = data.attribute_names
    pair_rows = "".join(
        f"<tr><td>{e(names[a])}</td><td>{e(names[c])}</td><td>{corr[:, a, c].mean():+.3f}</td>"
        f"<td>{corr[-1, a, c]:+.3f}</td></tr>"
        for a, c in top
    )
    layer_rows = "".join(
        f"<tr><td>{e(r['name'])}</td><td>{r['size'] if r['size'] is not None else ''}</td>"
        f"<td>{_num(r['grad_last'])}</td><td>{_num(r['bracket_first'])}</td>"
        f"<td>{_num(r['bracket_last'])}</td><td>{_num(r['ratio_last'])}</td></tr>"
        for r in layer_rms_table(data)
    )
    strongest = f"{e(names[top[0][0]])} / {e(names[top[0][1]])}" if top else "n/a"
    meta = data.meta
    facts = (
        f"dataset <b>{e(str(meta.get('dataset', '?')))}</b> · lr {e(str(meta.get('lr', '?')))}"
        f" · preconditioner {e(str(meta.get('preconditioner', 'none')))} · {s} checkpoints"
        f" (steps {data.steps[0]}–{data.steps[-1]}) · B = {b} bracket examples, P = {p} pairs,"
        f" T = {t} test examples, K = {k} outputs"
    )
    metrics_html = (
        f'<h2>Training</h2><img alt="training curves" src="{plots["metrics"]}">'
        if "metrics" in plots
        else ""
    )
    parts = {
        "%%TITLE%%": e(f"Bracket report: {meta.get('dataset', 'run')}"),
        "%%FACTS%%": facts,
        "%%SOURCE%%": e(str(data.results_dir)),
        "%%PEARSON%%": _num(fit.pearson),
        "%%SPEARMAN%%": _num(fit.spearman),
        "%%SLOPE%%": _num(fit.slope),
        "%%COUNT%%": str(fit.count),
        "%%STRONGEST%%": strongest,
        "%%STRONGEST_R%%": f"{corr[:, top[0][0], top[0][1]].mean():+.3f}" if top else "n/a",
        "%%PAIR_ROWS%%": pair_rows,
        "%%LAYER_ROWS%%": layer_rows or '<tr><td colspan="6">no per-tensor arrays</td></tr>',
        "%%LAST_STEP%%": str(data.steps[-1]),
        "%%FIRST_STEP%%": str(data.steps[0]),
        "%%METRICS%%": metrics_html,
        "%%RANKING%%": _ranking_html(data),
        **{f"%%PLOT_{key.upper()}%%": uri for key, uri in plots.items()},
    }
    parts["%%DATA%%"] = _json_for_script(payload)
    # one pass, so text substituted in is never itself searched for placeholders
    document = re.sub(r"%%[A-Z_]+%%", lambda m: parts.get(m.group(0), ""), _template())
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(document, encoding="utf-8")
    return out_path


def _template() -> str:
    """The report's HTML/CSS/JS skeleton with ``%%NAME%%`` placeholders (``assets/report.html``)."""
    return resources.files("perturbative").joinpath("assets/report.html").read_text("utf-8")
