"""A sweep's results -> one self-contained HTML report.

The HTML holds its data as inline JSON, its plots as base64 PNG data URIs and its code as
vanilla JavaScript (``assets/report.html``, with ``%%NAME%%`` placeholders), so it works offline
and from a ``file://`` URL. Every placeholder must be filled and every filling used: a misspelled
one is an error, not a blank.
"""

from __future__ import annotations

import html
import json
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np

from perturbative._core.io import write_text
from perturbative.pipeline.config import examples_in_batch
from perturbative.pipeline.recorded_records import summary
from perturbative.report.figures import image_uri, phase_check_figures, report_figures
from perturbative.report.statistics import (
    ReportData,
    attribute_comovement,
    bracket_gradient_correlation,
    layer_rms_table,
    load_report_data,
    order_check_rows,
    order_check_scores,
    order_check_windows,
    ranking_table,
    top_attribute_pairs,
)


def _ranking_html(data: ReportData) -> str:
    rows = ranking_table(data)
    if not rows:
        return ""
    width = max(len(r["top"]) for r in rows)
    body = "".join(
        f"<tr><td>{r['step']}</td>"
        + "".join(f"<td>#{i}<br><small>{_num(v)}</small></td>" for i, v in r["top"])
        + "<td></td>" * (width - len(r["top"]))
        + f"<td>{_num(r['median'])}</td><td>{'' if r['kept'] is None else r['kept']}</td></tr>"
        for r in rows
    )
    observable = html.escape(str(data.meta.get("observable", "the observable")))
    m = data.ranking_indices.shape[1]
    ranks = "".join(f"<th>rank {n + 1}<br><small>index, S_x</small></th>" for n in range(width))
    model = data.meta.get("ranking_model")
    if model and "run's" in model:
        what = (
            f"{m} training examples ranked by |S_x|, S_x the {html.escape(model)}: the predicted "
            f"change of {observable} (negative: x first lowers it), with the optimizer's state "
            "part and its curvature part, as the order check tests it. Sorted by |S_x|, largest "
            "first."
        )
    else:
        what = (
            f"{m} training examples ranked by |S_x|, S_x = sum over the pool of u . [v_x, v_y], "
            f"u the gradient of {observable}: lr^2 S_x is how much training x first rather than "
            "last among the others changes it (negative: x first lowers it). The scores model "
            f"{html.escape(model or 'plain SGD')}: under Adam or momentum the optimizer's "
            "state, which they leave out, can have the larger part and the other sign. Sorted "
            "by |S_x|, largest first."
        )
    return (
        "<h2>Order sensitivity of training examples</h2>"
        f'<p class="hint">{what}</p>'
        '<table class="data" id="ranking-table"><thead><tr><th>step</th>'
        f"{ranks}<th>median |S_x|</th><th>top 10 kept from previous checkpoint</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _order_check_html(data: ReportData, plots: dict) -> str:
    """Predictions against real reordered training (``perturbative order-check``)."""
    if not data.order_check:
        return ""
    rows = "".join(
        f"<tr><td>{r['step']}</td><td>x{r['scale']:g}</td><td>{r['kind']}</td>"
        f"<td>{r['horizon']}</td><td>{r['pairs']}</td><td>{_num(r['accuracy'])}</td>"
        f"<td>{_num(r['accuracy_above_floor'])} ({r['above_floor']})</td>"
        + (
            f"<td>{_num(r['accuracy_settled'])} ({r['settled_pairs']})</td>"
            if r.get("settled_pairs") is not None
            else "<td></td>"
        )
        + f"<td>{_num(r['spearman'])}</td><td>{_num(r['calibration_slope'])}</td>"
        f"<td>{_num(r['baselines']['random'])}</td><td>{_num(r['baselines']['gradient_norm'])}</td>"
        f"<td>{_num(r['baselines']['sgd_bracket'])}</td>"
        f"<td>{_num(r['baselines'].get('second_order'))}</td></tr>"
        for r in order_check_rows(data.order_check)
    )
    windows = "".join(
        f"<tr><td>{w['step']}</td><td>x{w['scale']:g}</td><td>{w['k']}</td><td>{w['windows']}</td>"
        f"<td>{_num(w['best_picked'])}</td><td>{_num(w['gap_share'])}</td>"
        f"<td>{_num(w.get('second_order_best_picked'))}</td></tr>"
        for w in order_check_windows(data.order_check)
    )
    scores = "".join(
        f"<tr><td>{c['step']}</td><td>{c['examples']}</td><td>{_num(c['accuracy'])}</td>"
        f"<td>{_num(c['relative_error'])}</td><td>{_num(c['sgd'])}</td>"
        f"<td>{_num(c['state_part'])}</td></tr>"
        for c in order_check_scores(data.order_check)
    )
    scores_table = (
        '<table class="data"><thead><tr><th>step</th><th>scored examples</th>'
        "<th>sign accuracy</th><th>median relative error</th><th>plain-SGD score</th>"
        f"<th>state part alone</th></tr></thead><tbody>{scores}</tbody></table>"
        if scores
        else ""
    )
    images = "".join(f'<img alt="{html.escape(k)}" src="{v}">' for k, v in plots.items())
    return (
        "<h2>Order predictions against real reordered training</h2>"
        '<p class="hint">At checkpoints of this run, with the model and its optimizer state '
        "restored: O(x then y) - O(y then x) predicted (the optimizer's own steps, gradients "
        "expanded to third order at the checkpoint, or second with --expansion 2) against "
        "really training both orders and h further identical steps (predicted by really "
        "following the first order's run and starting the other from it minus the predicted "
        "difference of parameters and optimizer state, each of its steps fed the gradient "
        "expanded at the first run's point). Pairs are two of the run's own logged batches "
        "(trained as its next two steps, at the lrs it logged for them), two random examples, "
        "two "
        "random minibatches, or two examples exchanged between consecutive minibatches. "
        f"{_single_examples(data.order_check.options, data.order_check.batch_statistics)} "
        "O is the held-out mean "
        "loss; sign accuracy over all pairs and "
        "over pairs whose real difference is above the float32 rounding floor; settled: pairs "
        "whose third-order term is smaller than the prediction (the expansion's own error "
        "estimate says its sign is safe); calibration "
        "slope 1 means right on average. Baselines: a fair coin, larger gradient first, and the "
        "plain-SGD bracket lr^2 u . [v_x, v_y] that ignores the optimizer; beside them the "
        "prediction with the gradients expanded to second order only.</p>"
        f'<div class="plots">{images}</div>'
        '<table class="data"><thead><tr><th>step</th><th>lr</th><th>pairs of</th><th>h</th>'
        "<th>n</th><th>sign accuracy</th><th>above floor (n)</th><th>settled (n)</th>"
        "<th>Spearman</th>"
        "<th>slope</th><th>coin</th><th>grad norm</th><th>SGD bracket</th>"
        "<th>2nd order</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        '<table class="data"><thead><tr><th>step</th><th>lr</th><th>k</th><th>windows</th>'
        "<th>predicted best is real best</th><th>share of best-to-worst gap</th>"
        "<th>2nd order: best is real best</th></tr></thead>"
        f"<tbody>{windows}</tbody></table>{scores_table}"
    )


def _recorded_check_html(data: ReportData) -> str:
    """Predictions against really reordering a recorded run (``perturbative order-check`` on a
    run of :class:`perturbative.Recorder`), from the check's saved summary."""
    check = data.recorded_check
    numbers = summary(check) if check is not None else None
    if numbers is None or (not numbers.pairs and numbers.scores is None):
        return ""
    rows = {"all checkpoints": numbers.all} if numbers.all else {}
    rows |= {str(step): row for step, row in numbers.by_checkpoint.items()}
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{row.pairs}</td>"
        f"<td>{_num(row.sign_accuracy)}</td><td>{_num(row.median_relative_error)}</td>"
        f"<td>{_num(row.fair_coin)}</td><td>{_num(row.larger_gradient_first)}</td>"
        f"<td>{_num(row.plain_sgd_bracket)}</td><td>{_num(row.optimizer_state_part)}</td></tr>"
        for name, row in rows.items()
    )
    windows = (
        f"<p>Best of 3! orders: the predicted best was the real best in "
        f"{numbers.best_of_3_picked} of {numbers.windows} windows of three of the run's "
        "batches.</p>"
        if numbers.windows
        else ""
    )
    optimizer = html.escape(check.optimizer or "the run's optimizer")
    scores = ""
    if numbers.scores is not None:
        got = numbers.scores
        window = check.options.get("score_window", "?")
        by_step = ", ".join(
            f"step {step} {_num(value)}" for step, value in got.by_checkpoint.items()
        )
        scores = (
            f"<p>Order scores with the run's {optimizer}: the sign of training an example in "
            f"the first rather than the last of the run's next {window} batches was right for "
            f"<b>{_num(got.predicted)}</b> of {got.scored_examples} "
            f"examples ({by_step}); the plain-SGD score {_num(got.sgd)}, the "
            f"optimizer-state part alone {_num(got.state_part)}.</p>"
        )
    table = (
        '<table class="data"><thead><tr><th>checkpoint</th><th>pairs</th><th>sign accuracy</th>'
        "<th>median relative error</th><th>coin</th><th>grad norm</th><th>SGD bracket</th>"
        f"<th>state part</th></tr></thead><tbody>{body}</tbody></table>"
        if rows
        else ""
    )
    return (
        "<h2>Order predictions against really reordering this run</h2>"
        f'<p class="hint">At checkpoints of this recorded run, with its {optimizer} state, the lr '
        "its schedule gave and its gradient clipping: O(A then B) - O(B then A) for pairs of the "
        "run's own minibatches, predicted (the optimizer's own steps, each gradient expanded at "
        "the checkpoint) against really training both orders in float64. O is the task's "
        "observable (by default the held-out mean loss). Baselines: a fair coin, larger "
        "gradient first, the plain-SGD bracket that ignores the optimizer, and the "
        "optimizer-state part alone.</p>"
        f"{table}{windows}{scores}"
    )


def _phase_check_html(data: ReportData) -> str:
    """Which data first: phase orders predicted against really training them
    (``perturbative phase-check``), from the check's saved summary, per target and ``k``."""
    check = data.phase_check
    if not check or not check.summary.rows:
        return ""
    plots = phase_check_figures(check)
    tables = []
    for target, by_k in check.summary.rows.items():
        methods = list(dict.fromkeys(m for row in by_k.values() for m in row.methods))
        head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
        body = ""
        for k, row in by_k.items():
            cells = ""
            for m in methods:
                got = row.methods.get(m)
                if got is None:
                    cells += "<td>not run</td>"
                    continue
                best = f"<br><small>best of 3! {_num(got.best_of_3)}</small>" if got.triples else ""
                cells += (
                    f"<td>{_num(got.sign_accuracy_above_floor)}"
                    f"<br><small>tau {_num(got.kendall_tau)}</small>{best}</td>"
                )
            body += f"<tr><td>{k}</td><td>{row.above_floor} of {row.pairs}</td>{cells}</tr>"
        tables.append(
            f'<h3>{html.escape(target)}</h3><table class="data"><thead><tr><th>k</th>'
            f"<th>pairs above the floor</th>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
    images = "".join(f'<img alt="{key}" src="{uri}">' for key, uri in plots.items())
    return (
        "<h2>Which data first? The order of training phases</h2>"
        '<p class="hint">At checkpoints of this run, phases of k batches drawn from one source '
        "each (a class, an attribute group, a text domain): O(A then B) - O(B then A), predicted "
        "by each method and really trained both ways on copies of the model and its optimizer "
        "(float64). Each cell: the sign accuracy over pairs above the measured rounding floor, "
        "Kendall's tau of the predicted ranking of the sources against the real tournament's, "
        "and how often the predicted best of the 3! orders of three phases was the real best. "
        "Dotted lines: heuristics.</p>"
        f"{images}{''.join(tables)}"
    )


def _single_examples(options: dict, batch_statistics: list[str] | None = None) -> str:
    """How the check trained a single example (checks made before the setting: alone; a run
    with no BatchNorm on batch statistics: alone, as the run would)."""
    if batch_statistics == []:
        return (
            "A single example is trained alone (the run trained no BatchNorm on batch statistics)."
        )
    if examples_in_batch(options):
        return (
            "A single example is trained inside a minibatch of the run's batch size whose other "
            "examples weigh 0, so BatchNorm normalises it by that batch's statistics, as in "
            "training."
        )
    return "A single example is trained alone, BatchNorm in eval mode (running statistics)."


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
    plots = report_figures(data, fit, corr, top)
    metrics_plot = plots.pop("metrics", None)
    order_plots = {k: plots.pop(k) for k in list(plots) if k.startswith("order_")}
    e = html.escape
    names = data.attribute_names
    parts = {
        "TITLE": e(_title(data)),
        "FACTS": _facts(data),
        "REPLAY": _replay_html(data),
        "SOURCE": e(str(data.results_dir)),
        "PEARSON": _num(fit.pearson),
        "SPEARMAN": _num(fit.spearman),
        "SLOPE": _num(fit.slope),
        "COUNT": str(fit.count),
        "COMOVEMENT_BOX": "" if data.tokens else _comovement_box(names, corr, top, _noun(data)),
        "COMOVEMENT": ""
        if data.tokens or not top
        else _comovement_html(names, corr, top, data.steps[-1], plots, data.meta),
        "LAYERS": _layers_html(data, plots.pop("layers", None)),
        "METRICS": (
            f'<h2>Training</h2><img alt="training curves" src="{metrics_plot}">'
            if metrics_plot
            else ""
        ),
        "RANKING": _ranking_html(data)
        + _order_check_html(data, order_plots)
        + _recorded_check_html(data)
        + _phase_check_html(data),
        **{
            f"PLOT_{key.upper()}": uri for key, uri in plots.items() if not key.startswith("comove")
        },
        "DATA": _json_for_script(_payload(data)),
    }
    write_text(out_path, fill_template(_template(), parts))
    return out_path


def fill_template(template: str, parts: dict[str, str]) -> str:
    """Replace every ``%%NAME%%`` in ``template`` by ``parts[NAME]``, in one pass (text filled in
    is never itself searched for placeholders).

    Raises:
        KeyError: a placeholder has no part (a misspelling would otherwise render blank), or a
            part has no placeholder (it would silently not be shown).
    """
    found = set(re.findall(r"%%([A-Z_]+)%%", template))
    missing, unused = sorted(found - set(parts)), sorted(set(parts) - found)
    if missing or unused:
        raise KeyError(
            f"report template placeholders without a value {missing}, values "
            f"without a placeholder {unused}"
        )
    return re.sub(r"%%([A-Z_]+)%%", lambda m: parts[m.group(1)], template)


def _replay_html(data: ReportData) -> str:
    """The replay gate's gaps of the run's order check (or phase check), first thing on the
    page: a check run past a failed gate (``--allow-replay-gap``) says so above everything."""
    gaps = (
        (data.order_check.replay if data.order_check is not None else [])
        or (data.recorded_check.replay if data.recorded_check is not None else [])
        or (data.phase_check.replay if data.phase_check is not None else [])
    )
    if not gaps:
        return ""
    failed = [g for g in gaps if not g.passed]
    worst = max(gaps, key=lambda g: g.gap / max(g.tolerance, 1e-300))
    e = html.escape
    if failed:
        return (
            f'<p class="warning"><b>The order check models a step the loop did not take:</b> '
            f"replaying the logged steps missed the recorded checkpoint by {worst.gap:.2e} of "
            f"the movement at step {worst.step} (rounding allows {worst.tolerance:.1e}), "
            f"at {len(failed)} of {len(gaps)} checkpoints; it was run anyway "
            f"(--allow-replay-gap). Likely: {e('; or '.join(worst.causes[:3]))}.</p>"
        )
    return (
        f'<p class="facts">Replay gate passed at {len(gaps)} checkpoints: the logged steps '
        f"replayed with the modelled step reach the next checkpoint (largest gap {worst.gap:.1e} "
        f"of the movement, tolerance {worst.tolerance:.1e}).</p>"
    )


def _facts(data: ReportData) -> str:
    e, meta = html.escape, data.meta
    s, p, t, k = data.output_shift.shape
    lrs = sorted(set(meta.get("step_lr", {}).values()))
    lr = (
        f"lr {lrs[0]:.3g}–{lrs[-1]:.3g} (each checkpoint's shifts at its own)"
        if len(lrs) > 1
        else f"lr {e(str(meta.get('lr', '?')))}"
    )
    return (
        f"dataset <b>{e(str(meta.get('dataset', '?')))}</b> · {lr}"
        f" · preconditioner {e(str(meta.get('preconditioner', 'none')))} · {s} checkpoints"
        f" (steps {data.steps[0]}–{data.steps[-1]}) · B = {meta['bracket_examples']} bracket "
        f"examples, P = {p} pairs, T = {t} test examples, K = {k} outputs"
    )


def _title(data: ReportData) -> str:
    """The run's folder name, and what it trained on where the sweep names it."""
    folder = Path(data.results_dir).resolve()
    run = folder.parent.name if folder.name == "brackets" else folder.name
    dataset = str(data.meta.get("dataset", ""))
    return f"Bracket report: {run}" + (f" ({dataset})" if dataset not in ("", "recorded") else "")


def _noun(data: ReportData) -> str:
    """What the outputs are called: a CelebA run's are attributes, any other run's outputs."""
    return "attributes" if data.meta.get("dataset") == "celeba" else "outputs"


def _comovement_box(
    names: list[str], corr: np.ndarray, top: list[tuple[int, int]], noun: str
) -> str:
    e = html.escape
    if not top:
        return ""
    a, c = top[0]
    return (
        f'<div><span class="num">{np.abs(corr[:, a, c]).mean():.3f}</span>strongest co-moving '
        f"{noun}: <b>{e(names[a])} / {e(names[c])}</b> (largest mean |r| of their output "
        f"shifts over checkpoints; mean r {corr[:, a, c].mean():+.3f}).</div>"
    )


def _comovement_html(
    names: list[str],
    corr: np.ndarray,
    top: list[tuple[int, int]],
    last: int,
    plots: dict,
    meta: dict,
) -> str:
    """Which outputs move together; left out where the columns are tokens of different
    texts, whose co-movement means nothing. The wording is the run's: CelebA's attributes
    and its hair-colour example only on a CelebA run."""
    celeba = meta.get("dataset") == "celeba"
    noun, one = ("attributes", "attribute") if celeba else ("outputs", "output")
    example = (
        " On CelebA, the mutually exclusive Black_Hair / Brown_Hair move in opposite directions "
        "(r near -0.95) from a few hundred steps on: a swap of two training examples that raises "
        "one lowers the other."
        if celeba
        else ""
    )
    return (
        f"<h2>Which {noun} move together</h2>"
        '<p class="hint">At each checkpoint: the Pearson correlation, over all (pair, test '
        f"example) samples, between the output shifts of two {noun}. Pairs are sorted by "
        "mean |r| over checkpoints, largest first (|r| large: the pair moves together, r > 0, "
        f"or in opposite directions, r < 0); the signed mean r says which.{example}</p>"
        f'<table class="data" id="pairs-table"><thead><tr><th>{one}</th><th>{one}</th>'
        f"<th>mean |r| &#9660;</th><th>mean r</th><th>r at step {last}</th></tr></thead>"
        f"<tbody>{_pair_rows(names, corr, top)}</tbody></table>"
        '<div class="plots"><img alt="co-movement of the strongest pairs over training" '
        f'src="{plots["comovement"]}"><img alt="co-movement matrix" '
        f'src="{plots["comovement_matrix"]}"></div>'
    )


def _pair_rows(names: list[str], corr: np.ndarray, top: list[tuple[int, int]]) -> str:
    e = html.escape
    return "".join(
        f"<tr><td>{e(names[a])}</td><td>{e(names[c])}</td>"
        f"<td>{np.abs(corr[:, a, c]).mean():.3f}</td><td>{corr[:, a, c].mean():+.3f}</td>"
        f"<td>{corr[-1, a, c]:+.3f}</td></tr>"
        for a, c in top
    )


def _layers_html(data: ReportData, plot: str | None) -> str:
    """Per-parameter-tensor RMS of brackets and gradients: a chart, with every value in a
    collapsed table; left out when the step files hold no per-tensor arrays."""
    rows = layer_rms_table(data)
    if not rows:
        return ""
    first, last = data.steps[0], data.steps[-1]
    body = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{r['size'] if r['size'] is not None else ''}"
        f"</td><td>{_num(r['grad_last'])}</td><td>{_num(r['bracket_first'])}</td>"
        f"<td>{_num(r['bracket_last'])}</td><td>{_num(r['ratio_last'])}</td></tr>"
        for r in rows
    )
    chart = f'<div class="plots"><img alt="per-tensor RMS" src="{plot}"></div>' if plot else ""
    return (
        "<h2>Per-parameter-tensor RMS</h2>"
        '<p class="hint">RMS over all entries of the tensor and over all pairs (brackets) or '
        "bracket examples (gradients).</p>"
        f"{chart}<details><summary>every tensor's values ({len(rows)} tensors)</summary>"
        '<table class="data" id="rms-table"><thead><tr><th>parameter tensor</th><th>size</th>'
        f"<th>gradient RMS, step {last}</th><th>bracket RMS, step {first}</th>"
        f"<th>bracket RMS, step {last}</th><th>bracket / gradient</th></tr></thead>"
        f"<tbody>{body}</tbody></table></details>"
    )


def _payload(data: ReportData) -> dict:
    """The numbers the page's script draws, rounded to 4 significant digits."""
    s, _, t, k = data.output_shift.shape
    b = int(data.meta["bracket_examples"])
    thumbs = [] if data.thumbnails is None else [image_uri(im) for im in data.thumbnails[:b]]
    return {
        "names": data.attribute_names,
        "steps": data.steps.tolist(),
        "pairs": data.pairs.tolist(),
        "B": b,
        "T": t,
        "K": k,
        "shift": [_scaled(data.output_shift[n]) for n in range(s)],
        "lossShift": None
        if data.loss_shift is None
        else [_scaled(data.loss_shift[n]) for n in range(s)],
        "outputs": [_sig4(o) for o in data.outputs] if data.outputs is not None else None,
        "targets": None if data.targets is None else _sig4(data.targets),
        "texts": data.texts,
        "tokens": data.tokens,
        "bracketNorm": [_sig4(x) for x in data.bracket_norm],
        "gradNorm": [_sig4(x) for x in data.grad_norm],
        "cancellation": [_sig4(x) for x in data.cancellation],
        "testIndices": None if data.test_indices is None else data.test_indices.tolist(),
        "thumbs": thumbs,
    }


def _template() -> str:
    """The report's HTML/CSS/JS skeleton with ``%%NAME%%`` placeholders (``assets/report.html``)."""
    return resources.files("perturbative.report").joinpath("assets/report.html").read_text("utf-8")
