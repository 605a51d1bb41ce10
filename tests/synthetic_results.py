"""A small synthetic bracket-sweep results directory in the documented format.

``docs/results-format.md`` is the contract between the sweep and the report; this writes that
format from seeded random numbers so the report can be tested without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


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
