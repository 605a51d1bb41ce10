"""``perturbative tilt``: the two-moons demo from the command line, on tiny settings."""

import json

from perturbative.cli import main


def test_tilt_writes_pictures_and_strict_json(tmp_path, capsys):
    out = tmp_path / "tilt"
    flags = ["--steps", "30", "--num-data", "200", "--num-samples", "100", "--batch-size", "32"]
    assert main(["--threads", "1", "tilt", "--out-dir", str(out), *flags]) == 0
    assert "energy distance to exact p'" in capsys.readouterr().out
    result = json.loads((out / "tilt_demo.json").read_text(), parse_constant=lambda c: 1 / 0)
    assert set(result["distances"]) >= {"plain_to_tilted_target", "tilted_to_tilted_target"}
    assert (out / "tilt_before_after.png").stat().st_size > 1000


def test_a_flag_of_the_other_data_set_is_refused(capsys):
    assert main(["tilt", "--data", "digits", "--strength", "1"]) == 2
    assert "--strength does not apply to --data digits" in capsys.readouterr().err
