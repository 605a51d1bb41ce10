"""The command line end to end on tiny settings, and its errors."""

from perturbative.cli import main


def test_brackets_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["brackets", str(tmp_path)]) == 2
    assert "not a training run directory" in capsys.readouterr().err
