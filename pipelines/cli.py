"""The ``motor`` command: one sub-command module per job under ``pipelines/commands``.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. Modules import heavy libraries inside ``func`` so ``motor --help`` is fast.
"""
from __future__ import annotations

import argparse
import sys

from kg.cli import build_command_parser, run_command

COMMAND_MODULES = (
    "pipelines.commands.synth",
    "pipelines.commands.demo",
    "pipelines.commands.pretrain",
    "pipelines.commands.ablate",
    "pipelines.commands.finetune",
    "pipelines.commands.evaluate",
    "pipelines.commands.report",
    "pipelines.commands.build_dataset",
    "pipelines.commands.import_checkpoint",
    "pipelines.commands.reproduce",
    "pipelines.commands.visualize",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``motor`` parser with every sub-command registered."""
    return build_command_parser(
        "motor", "Pretrain, ablate, finetune and evaluate MOTOR models.", COMMAND_MODULES
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``motor``; returns the process exit code."""
    return run_command("motor", build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
