"""The digits tilt demo: exact targets, the classifier's floor, and a tiny end-to-end run."""

import json
import math

import numpy as np
import pytest
import torch

from perturbative.demos.digits_tilt import (
    DigitsTiltConfig,
    class_shares,
    delta_h,
    ink,
    load_digit_images,
    run_digits_tilt,
    summary_lines,
    total_variation,
)
from perturbative.tilt import tilt_weights


def test_class_tilt_target_is_the_closed_form_share():
    data = load_digit_images(0.2, seed=0)
    labels = data.train_labels.numpy()
    p3 = float(np.mean(labels == 3))
    for strength in (0.5, 2.0, 5.0):
        weights = tilt_weights(delta_h("class", data, 3), strength).numpy()
        share = class_shares(labels, weights)[3]
        odds = p3 * math.exp(strength)
        assert share == pytest.approx(odds / (odds + 1 - p3), rel=1e-12)


def test_ink_and_distances():
    images = torch.tensor([[-1.0] * 64, [1.0] * 64, [0.0] * 64])
    torch.testing.assert_close(ink(images), torch.tensor([0.0, 1.0, 0.5]))
    assert ink(torch.full((1, 64), 3.0)).item() == 1.0  # clipped to the pixel range
    assert total_variation([0.5, 0.5], [1.0, 0.0]) == 0.5
    np.testing.assert_allclose(class_shares(np.array([1, 1, 3])), [0, 2 / 3, 0, 1 / 3] + [0] * 6)


def test_tiny_run_writes_pictures_and_honest_numbers(tmp_path):
    config = DigitsTiltConfig(
        out_dir=tmp_path / "digits",
        class_strengths=(1.0, 6.0),
        ink_strengths=(0.25, 2.0),
        steps=60,
        hidden=32,
        diffusion_steps=30,
        num_samples=200,
        schemes=("adjusted", "resample"),
    )
    result = run_digits_tilt(config)
    names = ("tilt_digits.json", "tilt_digits_distance.png", "tilt_digits_class.png")
    for name in (*names, "tilt_digits_ink.png"):
        assert (tmp_path / "digits" / name).is_file()
    saved = json.loads(
        (tmp_path / "digits" / "tilt_digits.json").read_text(), parse_constant=pytest.fail
    )
    assert saved["classifier"]["heldout_accuracy"] > 0.9
    assert saved["classifier"]["floor_class_tv"] < 0.05
    rows = {r["strength"]: r for r in saved["perturbations"]["class"]}
    # the class tilt never trips the diagnostics: as lambda grows p'_N tends to the training 3s,
    # an ESS near their number (a tenth of the data) with no example above 1%
    assert rows[1.0]["trusted"] and rows[6.0]["trusted"]
    assert rows[6.0]["diagnostics"]["ess_fraction"] > 0.1
    assert set(rows[1.0]["schemes"]) == {"adjusted", "resample"}
    ink_rows = {r["strength"]: r for r in saved["perturbations"]["ink"]}
    assert not ink_rows[2.0]["trusted"]
    first = saved["first_order_ink"]
    assert first["predicted"] == pytest.approx(first["exact_on_data"], rel=0.15)
    assert saved["largest_trusted"]["class"]["strength"] == 6.0
    assert saved["largest_trusted"]["ink"]["strength"] == 0.25
    assert any(line.startswith("class tilt") for line in summary_lines(result))
