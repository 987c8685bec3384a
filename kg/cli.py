"""The ``kg`` command: one sub-command module per job under ``kg/commands``.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. Modules import heavy libraries inside ``func`` so ``kg --help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from kg.errors import KGError

COMMAND_MODULES = (
    "kg.commands.build",
    "kg.commands.stats",
    "kg.commands.index",
    "kg.commands.lookup",
    "kg.commands.export_gk",
    "kg.commands.extract",
    "kg.commands.label",
    "kg.commands.embed",
    "kg.commands.export_motor",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="kg",
        description="Build and query medical knowledge for MOTOR-style pretraining.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kg``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (KGError, FileNotFoundError, ValueError) as err:
        print(f"kg {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
