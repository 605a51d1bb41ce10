"""``perturbative tilt``: diffusion models trained toward ``p exp(-dH)``.

``--data moons`` (default) is the 2-D demo; ``--data digits`` tilts a diffusion model of the
embedded 8x8 digit images by class and by ink and measures it against the exact target.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from perturbative._core.errors import InputError
from perturbative.demos.digits_tilt import DigitsTiltConfig, run_digits_tilt, summary_lines
from perturbative.demos.two_moons import TiltDemoConfig, run_tilt_demo

MOONS_HELP = {
    "out_dir": "output folder for the pictures and tilt_demo.json",
    "strength": "lambda of the tilt exp(-lambda dH)",
    "small_strength": "the small lambda of the first-order check",
    "steps": "training steps of each diffusion model",
    "batch_size": "target adjusted batch size",
    "num_data": "two-moons data points",
    "num_samples": "model samples compared with exact p' samples",
    "seed": "seed of data, models and sampling",
}
DIGITS_HELP = {
    "out_dir": "output folder for the pictures and tilt_digits.json",
    "tilted_class": "the digit the class tilt favours",
    "class_strengths": "comma-separated lambdas of the class tilt",
    "ink_strengths": "comma-separated lambdas of the ink tilt",
    "steps": "training steps of each diffusion model",
    "num_samples": "images generated per model",
    "seed": "seed of split, models and sampling",
}


def tilt_command_parser(subparsers) -> None:
    parser = subparsers.add_parser("tilt", help="diffusion models trained toward p exp(-dH)")
    parser.add_argument(
        "--data",
        choices=["moons", "digits"],
        default="moons",
        help="moons: the 2-D demo; digits: 8x8 digit images tilted by class and ink",
    )
    defaults = {**_defaults(DigitsTiltConfig, DIGITS_HELP), **_defaults(TiltDemoConfig, MOONS_HELP)}
    for name, kind in defaults.items():
        text = MOONS_HELP.get(name) or DIGITS_HELP[name]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=str if kind is tuple else kind,
            default=None,
            help=f"{text} (default: {_default_text(name)})",
        )
    parser.set_defaults(func=tilt_command)


def _defaults(cls, helps: dict[str, str]) -> dict[str, type]:
    kinds = {"Path": Path, "float": float, "int": int, "tuple[float, ...]": tuple}
    return {f.name: kinds[str(f.type)] for f in fields(cls) if f.name in helps}


def _default_text(name: str) -> str:
    shown = []
    for cls, helps in ((TiltDemoConfig, MOONS_HELP), (DigitsTiltConfig, DIGITS_HELP)):
        if name in helps:
            value = next(f.default for f in fields(cls) if f.name == name)
            if isinstance(value, tuple):
                value = ",".join(f"{v:g}" for v in value)
            shown.append(f"{value} for {'moons' if cls is TiltDemoConfig else 'digits'}")
    return "; ".join(shown)


def tilt_command(args: argparse.Namespace) -> int:
    helps = DIGITS_HELP if args.data == "digits" else MOONS_HELP
    foreign = [
        "--" + n.replace("_", "-")
        for n in {**MOONS_HELP, **DIGITS_HELP}
        if n not in helps and getattr(args, n) is not None
    ]
    if foreign:
        verb = "does" if len(foreign) == 1 else "do"
        raise InputError(
            f"{', '.join(foreign)} {verb} not apply to --data {args.data} "
            "(perturbative tilt --help lists each one's data)"
        )
    given = {name: getattr(args, name) for name in helps if getattr(args, name) is not None}
    for name in ("class_strengths", "ink_strengths"):
        if name in given:
            given[name] = tuple(float(v) for v in given[name].split(","))
    if args.data == "digits":
        result = run_digits_tilt(DigitsTiltConfig(**given), progress=True)
        for line in summary_lines(result):
            print(line)
        print(f"pictures and numbers: {Path(result['config']['out_dir']).resolve()}")
        return 0
    config = TiltDemoConfig(**given)
    result = run_tilt_demo(config, progress=True)
    distances = result["distances"]
    print(
        "energy distance to exact p': "
        + ", ".join(f"{k} {v:.4f}" for k, v in distances.items() if isinstance(v, float))
    )
    print(f"pictures and numbers: {Path(config.out_dir).resolve()}")
    return 0
