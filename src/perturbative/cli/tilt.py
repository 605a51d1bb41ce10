"""``perturbative tilt``: diffusion models trained toward ``p exp(-dH)``.

``--data moons`` (default) is the 2-D demo; ``--data digits`` tilts a diffusion model of the
embedded 8x8 digit images by class and by ink and measures it against the exact target.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from perturbative._core.errors import InputError
from perturbative.cli._flags import add_config_flags, read_config_flags, shown_default
from perturbative.demos.digits_tilt import DigitsTiltConfig, run_digits_tilt, summary_lines
from perturbative.demos.two_moons import TiltDemoConfig, run_tilt_demo

MOONS_FIELDS = (
    "out_dir",
    "strength",
    "small_strength",
    "steps",
    "batch_size",
    "num_data",
    "num_samples",
    "seed",
)
DIGITS_FIELDS = (
    "out_dir",
    "tilted_class",
    "class_strengths",
    "ink_strengths",
    "steps",
    "num_samples",
    "seed",
)


def tilt_command_parser(subparsers) -> None:
    parser = subparsers.add_parser("tilt", help="diffusion models trained toward p exp(-dH)")
    parser.add_argument(
        "--data",
        choices=["moons", "digits"],
        default="moons",
        help="moons: the 2-D demo; digits: 8x8 digit images tilted by class and ink",
    )
    # digits first, so that a field both demos have takes the moons' help: both defaults shown
    add_config_flags(
        parser,
        DigitsTiltConfig,
        [f for f in DIGITS_FIELDS if f not in MOONS_FIELDS],
        overrides=True,
    )
    add_config_flags(parser, TiltDemoConfig, MOONS_FIELDS, overrides=True, default_text=_default)
    parser.set_defaults(func=tilt_command)


def _default(name: str) -> str:
    shown = []
    for cls, names, data in (
        (TiltDemoConfig, MOONS_FIELDS, "moons"),
        (DigitsTiltConfig, DIGITS_FIELDS, "digits"),
    ):
        if name in names:
            value = next(f.default for f in fields(cls) if f.name == name)
            shown.append(f"{shown_default(value)} for {data}")
    return "; ".join(shown)


def tilt_command(args: argparse.Namespace) -> int:
    names, cls = (
        (DIGITS_FIELDS, DigitsTiltConfig)
        if args.data == "digits"
        else (MOONS_FIELDS, TiltDemoConfig)
    )
    foreign = [
        "--" + n.replace("_", "-")
        for n in {*MOONS_FIELDS, *DIGITS_FIELDS}
        if n not in names and getattr(args, n) is not None
    ]
    if foreign:
        verb = "does" if len(foreign) == 1 else "do"
        raise InputError(
            f"{', '.join(foreign)} {verb} not apply to --data {args.data} "
            "(perturbative tilt --help lists each one's data)"
        )
    given = read_config_flags(args, cls, names)
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
