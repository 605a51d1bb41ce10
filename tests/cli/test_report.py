"""The command line end to end on tiny settings, and its errors."""

from perturbative.cli import main


def test_report_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "perturbative brackets" in capsys.readouterr().err
