"""``perturbative upgrade``: a run of ``train`` made before 0.4 is named with the command that
converts it, and converted into the recorded form every check reads."""

from pathlib import Path

import pytest

from perturbative.pipeline import checkpoints
from perturbative.pipeline.checkpoints import list_checkpoints
from perturbative.pipeline.config import TrainConfig
from perturbative.pipeline.train import train


def tiny(tmp_path: Path, **overrides) -> TrainConfig:
    """A digits run of seconds: 8x8 images, a sixteenth-width MXResNet, batches of 4."""
    return TrainConfig.demo(
        run_dir=str(tmp_path / "run"), image_size=8, width=0.0625, batch_size=4, **overrides
    )


def _as_before_0_4(run_dir: Path) -> None:
    """Make a run look like one of ``train`` before 0.4: no run.json, no order.jsonl, and
    checkpoints that do not name their optimizer's parameters."""
    for name in ("run.json", "order.jsonl"):
        (run_dir / name).unlink()
    for _, path in list_checkpoints(run_dir):
        tensors, info = checkpoints.read_checkpoint(path)
        info = {k: v for k, v in info.items() if k not in ("optimizer_param_names", "kind")}
        info.pop("format_version")
        checkpoints.save_checkpoint(path, tensors, info)


def test_a_run_of_an_earlier_version_is_refused_then_upgraded(tmp_path, capsys):
    """A run made before 0.4 is named with the command that converts it; the conversion draws
    the batches again from the config, checked against each checkpoint's sampler, and the
    converted run passes the replay gate; a config that is not the run's writes nothing."""
    from perturbative._core.errors import InputError
    from perturbative.cli import main
    from perturbative.pipeline.recorded_run import read_run, run_task
    from perturbative.pipeline.recorder import read_order_log
    from perturbative.pipeline.replay import replay_gap

    config = tiny(tmp_path, steps=8, checkpoint_every=4, eval_every=4)
    run_dir = train(config, progress=False)
    logged = (run_dir / "order.jsonl").read_text()
    _as_before_0_4(run_dir)
    with pytest.raises(InputError, match=f"perturbative upgrade {run_dir}"):
        read_run(run_dir)
    with pytest.raises(InputError, match="convert it first with `perturbative upgrade"):
        train(tiny(tmp_path, steps=10, checkpoint_every=4, eval_every=4), resume=True)
    # a config that is not the run's (another sampler seed) reaches other positions
    saved = (run_dir / "config.json").read_text()
    (run_dir / "config.json").write_text(saved.replace('"seed": 0', '"seed": 5'))
    assert main(["upgrade", str(run_dir)]) == 2
    assert "do not reach the sampler state" in capsys.readouterr().err
    assert not (run_dir / "run.json").exists() and not (run_dir / "order.jsonl").exists()
    (run_dir / "config.json").write_text(saved)
    (run_dir / "brackets").mkdir()  # a sweep made before 0.4 is kept, set aside
    (run_dir / "brackets" / "meta.json").write_text("{}")

    capsys.readouterr()
    assert main(["upgrade", str(run_dir)]) == 0
    assert (
        f"kept the sweep made before 0.4 as {run_dir / 'brackets-0.3'}" in capsys.readouterr().out
    )
    assert (run_dir / "brackets-0.3" / "meta.json").read_text() == "{}"
    assert not (run_dir / "brackets").exists()
    assert (run_dir / "order.jsonl").read_text() == logged
    run, log = read_run(run_dir), read_order_log(run_dir)
    assert run["loop"]["upgraded"] and run["model_mode"]["batch_statistics"]
    gap = replay_gap(run_dir, 4, run_task(run_dir), run, log)
    assert gap.passed, gap
    assert main(["upgrade", str(run_dir)]) == 2
    assert "needs no upgrade" in capsys.readouterr().err
