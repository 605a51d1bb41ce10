"""Command-line interface: one function per subcommand, each parsing flags into a config and
calling library code. No math here.

    perturbative demo                          # train -> brackets -> report on embedded digits
    perturbative run --celeba PATH             # the reference experiment on CelebA
    perturbative train [--data digits|celeba] [--celeba PATH] [--resume] [--tilt Smiling=1.5]
    perturbative brackets RUN_DIR              # bracket sweep over a run's checkpoints
    perturbative report RUN_DIR                # self-contained HTML report
    perturbative tilt                          # 2-D diffusion demo of tilted training
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# TrainConfig fields settable from the command line: flag -> (field, type, help)
TRAIN_FLAGS = {
    "--run-dir": ("run_dir", str, "where config, metrics and checkpoints go"),
    "--steps": ("steps", int, "optimizer steps"),
    "--batch-size": ("batch_size", int, "examples per step (tilted: target summed weight)"),
    "--lr": ("lr", float, "Adam learning rate"),
    "--image-size": ("image_size", int, "square image side in pixels"),
    "--depth": ("depth", int, "MXResNet depth: 18, 34 or 50"),
    "--width": ("width", float, "MXResNet channel multiplier"),
    "--checkpoint-every": ("checkpoint_every", int, "steps between checkpoints"),
    "--eval-every": ("eval_every", int, "steps between held-out evaluations"),
    "--limit": ("limit", int, "load only the first N CelebA images"),
    "--seed": ("seed", int, "seed of weights and batch order"),
    "--tilt": ("tilt", str, "train tilted, e.g. 'Smiling=1.5,Male=-0.5' (weights exp(sum s*y))"),
    "--device": ("device", str, "auto, cpu or cuda"),
}


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    for flag, (_, kind, text) in TRAIN_FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument("--resume", action="store_true", help="continue the run directory")


def _add_sweep_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bracket-examples", type=int, default=6, help="examples bracketed")
    parser.add_argument("--test-examples", type=int, default=32, help="held-out batch size")
    parser.add_argument(
        "--ranking-examples", type=int, default=256, help="training examples ranked"
    )
    parser.add_argument("--preconditioner", choices=["none", "adam"], default="none")
    parser.add_argument("--engine", choices=["auto", "forward", "double_backward"], default="auto")
    parser.add_argument("--save-brackets", action="store_true", help="store full bracket tensors")


def _train_config(args: argparse.Namespace, base):
    from perturbative.training import TrainConfig

    overrides = {
        field: getattr(args, flag[2:].replace("-", "_"))
        for flag, (field, _, _) in TRAIN_FLAGS.items()
        if getattr(args, flag[2:].replace("-", "_")) is not None
    }
    return TrainConfig.from_overrides(base, overrides)


def _sweep_options(args: argparse.Namespace, out_dir: str | None = None):
    from perturbative.experiment import SweepOptions

    return SweepOptions(
        bracket_examples=args.bracket_examples,
        test_examples=args.test_examples,
        ranking_examples=args.ranking_examples,
        preconditioner=args.preconditioner,
        engine=args.engine,
        save_brackets=args.save_brackets,
        out_dir=out_dir,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from perturbative.training import TrainConfig, train

    if args.data == "celeba":
        if args.celeba is None:
            raise SystemExit("--data celeba needs --celeba PATH (a folder in CelebA's layout)")
        base = TrainConfig.reference(args.celeba)
    else:
        base = TrainConfig.demo()
    run_dir = train(_train_config(args, base), resume=args.resume)
    print(f"run: {run_dir}")
    return 0


def cmd_brackets(args: argparse.Namespace) -> int:
    from perturbative.experiment import sweep_training_run

    out = sweep_training_run(args.run_dir, _sweep_options(args, args.out))
    print(f"results: {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from perturbative.report import write_report

    path = Path(args.path)
    if (path / "brackets" / "meta.json").exists():  # a run directory: report beside its checkpoints
        out = write_report(path / "brackets", args.out or path / "report.html")
    else:
        out = write_report(path, args.out)
    print(f"report: {out.resolve()}")
    return 0


def _pipeline(args: argparse.Namespace, base) -> int:
    from perturbative.experiment import run_experiment

    report = run_experiment(_train_config(args, base), _sweep_options(args), resume=args.resume)
    print(f"report: {report.resolve()}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from perturbative.training import TrainConfig

    # Running the demo again reuses what is there: finished training and swept checkpoints are
    # kept (a killed demo continues), and the report is rendered anew.
    args.resume = True
    return _pipeline(args, TrainConfig.demo())


def cmd_run(args: argparse.Namespace) -> int:
    from perturbative.training import TrainConfig

    return _pipeline(args, TrainConfig.reference(args.celeba))


def cmd_tilt(args: argparse.Namespace) -> int:
    from perturbative.diffusion import TiltDemoConfig, run_tilt_demo

    overrides = {k: v for k, v in vars(args).items() if k in TILT_FLAGS and v is not None}
    config = TiltDemoConfig(**overrides)
    result = run_tilt_demo(config)
    distances = result["distances"]
    print(
        "energy distance to exact p': "
        + ", ".join(f"{k} {v:.4f}" for k, v in distances.items() if isinstance(v, float))
    )
    print(f"pictures and numbers: {Path(config.out_dir).resolve()}")
    return 0


TILT_FLAGS = {
    "out_dir": (Path, "output folder for the pictures and tilt_demo.json"),
    "strength": (float, "lambda of the tilt exp(-lambda dH)"),
    "small_strength": (float, "the small lambda of the first-order check"),
    "steps": (int, "training steps of each diffusion model"),
    "batch_size": (int, "target adjusted batch size"),
    "num_data": (int, "two-moons data points"),
    "num_samples": (int, "model samples compared with exact p' samples"),
    "seed": (int, "seed of data, models and sampling"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perturbative",
        description="Perturbation theory of neural-network training: Lie brackets of training "
        "examples over a real training run, and training toward a tilted distribution.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's). Use 1 when other jobs share the cores: "
        "oversubscribed threads make small models tens of times slower",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train -> brackets -> report on the embedded digits")
    _add_train_flags(demo)
    _add_sweep_flags(demo)
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="the reference experiment: MXResNet on CelebA, end to end")
    run.add_argument("--celeba", required=True, help="folder in CelebA's on-disk layout")
    _add_train_flags(run)
    _add_sweep_flags(run)
    run.set_defaults(func=cmd_run)

    train = sub.add_parser("train", help="train and checkpoint (Adam lr 5e-3, batch 32)")
    train.add_argument("--data", choices=["digits", "celeba"], default="digits")
    train.add_argument("--celeba", default=None, help="folder in CelebA's on-disk layout")
    _add_train_flags(train)
    train.set_defaults(func=cmd_train)

    brackets = sub.add_parser("brackets", help="bracket sweep over a run's checkpoints")
    brackets.add_argument("run_dir", help="a run directory made by `perturbative train`")
    brackets.add_argument("--out", default=None, help="results directory (default RUN/brackets)")
    _add_sweep_flags(brackets)
    brackets.set_defaults(func=cmd_brackets)

    report = sub.add_parser("report", help="render results to one self-contained HTML file")
    report.add_argument("path", help="a run directory or its brackets/ results directory")
    report.add_argument("--out", default=None, help="HTML path (default: beside the results)")
    report.set_defaults(func=cmd_report)

    tilt = sub.add_parser("tilt", help="2-D diffusion demo of training toward p exp(-dH)")
    for name, (kind, text) in TILT_FLAGS.items():
        tilt.add_argument(
            "--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=text
        )
    tilt.set_defaults(func=cmd_tilt)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"perturbative {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
