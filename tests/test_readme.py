"""The README's Python API snippet runs as written on a tiny model."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import perturbative as pt

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_snippet_runs():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python block"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(3):  # give Adam a second moment
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    scope = {
        "model": model,
        "optimizer": optimizer,
        "x": x,
        "y": y,
        "batch_a": (x[:3], y[:3]),
        "batch_b": (x[3:6], y[3:6]),
        "x1": (x[:1], y[:1]),
        "x2": (x[1:2], y[1:2]),
        "x_test": x[6:],
        "held_out": (x[6:], y[6:]),
        "pool": (x[:6], y[:6]),
        "next_batches": [
            (x[i % 4 * 2 : i % 4 * 2 + 2], y[i % 4 * 2 : i % 4 * 2 + 2]) for i in range(20)
        ],
    }
    exec(compile(blocks[0], str(README), "exec"), scope)
    assert scope["B"]["0.weight"].shape == (6, 6, 5, 4)
    assert scope["shift"].shape == (15, 2, 3)
    assert scope["M"].shape == (6, 6)
    assert scope["check"].measured["0.weight"].shape == (5, 4)
    torch.testing.assert_close(scope["S"], scope["M"].sum(1), rtol=1e-4, atol=1e-6)
    assert isinstance(scope["swap"].predicted, float) and len(scope["window"].orders) == 6
    assert len(scope["later"]) == 3 and scope["later"][0] == scope["swap"].predicted


def test_readme_hugging_face_snippet_runs():
    pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install -e '.[hf]')"
    )
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    snippet = next(b for b in blocks if "GPT2LMHeadModel" in b)
    torch.manual_seed(0)
    scope = {"torch": torch, "F": torch.nn.functional, "pt": pt}
    exec(compile(snippet, str(README), "exec"), scope)
    assert set(scope["lm_bracket"]) == set(scope["lm_params"])
