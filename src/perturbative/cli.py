"""Command-line interface: one function per subcommand, no math here."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perturbative")
    parser.add_subparsers(dest="command", required=True)
    parser.parse_args(argv)
    return 0
