"""The 2-D tilted-training demo on two moons."""

import json
import warnings

import pytest

from perturbative.demos.two_moons import TiltDemoConfig, run_tilt_demo


def test_tiny_demo_writes_pictures_and_learns_the_tilt(tmp_path):
    config = TiltDemoConfig(
        out_dir=tmp_path / "demo",
        num_data=600,
        steps=300,
        hidden=32,
        diffusion_steps=40,
        num_samples=500,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run_tilt_demo(config)
    for name in ("tilt_before_after.png", "tilt_first_order.png", "tilt_demo.json"):
        assert (tmp_path / "demo" / name).stat().st_size > 1000
    saved = json.loads((tmp_path / "demo" / "tilt_demo.json").read_text())
    d = saved["distances"]
    assert d["tilted_to_tilted_target"] < 0.2 * d["plain_to_tilted_target"]
    assert saved["first_order"]["predicted_slope"] == pytest.approx(-1.0, abs=1e-6)
    assert result["diagnostics"]["problems"] == []


@pytest.mark.slow
def test_default_demo_matches_p_prime_and_first_order(tmp_path):
    """The default demo (about a minute): stated bounds of examples/tilted_diffusion.py."""
    result = run_tilt_demo(TiltDemoConfig(out_dir=tmp_path))
    d = result["distances"]
    assert d["tilted_to_tilted_target"] < 0.01 * d["plain_to_tilted_target"]
    assert d["tilted_to_tilted_target"] < 6 * d["floor_exact_to_exact"]
    fo = result["first_order"]
    assert abs(fo["measured_shift"] - fo["predicted_shift"]) < 3 * fo["sampling_standard_error"]
