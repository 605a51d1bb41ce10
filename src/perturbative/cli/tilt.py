"""``perturbative tilt``: the 2-D diffusion demo of training toward ``p exp(-dH)``."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from perturbative.demos.two_moons import TiltDemoConfig, run_tilt_demo

TILT_HELP = {
    "out_dir": "output folder for the pictures and tilt_demo.json",
    "strength": "lambda of the tilt exp(-lambda dH)",
    "small_strength": "the small lambda of the first-order check",
    "steps": "training steps of each diffusion model",
    "batch_size": "target adjusted batch size",
    "num_data": "two-moons data points",
    "num_samples": "model samples compared with exact p' samples",
    "seed": "seed of data, models and sampling",
}


def tilt_command_parser(subparsers) -> None:
    parser = subparsers.add_parser("tilt", help="2-D diffusion demo of training toward p exp(-dH)")
    for f in fields(TiltDemoConfig):
        if f.name in TILT_HELP:
            kind = {"Path": Path, "float": float, "int": int}[str(f.type)]
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                type=kind,
                default=f.default,
                help=f"{TILT_HELP[f.name]} (default: {f.default})",
            )
    parser.set_defaults(func=tilt_command)


def tilt_command(args: argparse.Namespace) -> int:
    config = TiltDemoConfig(**{name: getattr(args, name) for name in TILT_HELP})
    result = run_tilt_demo(config, progress=True)
    distances = result["distances"]
    print(
        "energy distance to exact p': "
        + ", ".join(f"{k} {v:.4f}" for k, v in distances.items() if isinstance(v, float))
    )
    print(f"pictures and numbers: {Path(config.out_dir).resolve()}")
    return 0
