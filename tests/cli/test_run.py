"""``perturbative run``: the reference pipeline from the command line."""

from cases import SHARED_CELEBA, TINY_RUN, TINY_SWEEP

from perturbative.cli import main


def test_run_needs_a_celeba_folder_that_exists(tmp_path, capsys):
    code = main(["run", "--celeba", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r")])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("perturbative run: error:") and "Traceback" not in error


def test_run_on_the_shared_celeba_subset(tmp_path, capsys):
    import pytest

    if not SHARED_CELEBA.is_dir():
        pytest.skip(f"shared CelebA subset not found at {SHARED_CELEBA}")
    flags = [*TINY_RUN, "--width", "0.0625", "--limit", "300", *TINY_SWEEP]
    assert (
        main(["run", "--celeba", str(SHARED_CELEBA), "--run-dir", str(tmp_path / "r"), *flags]) == 0
    )
    assert (tmp_path / "r" / "report.html").is_file()
