"""The ``kg`` command: one sub-command module per job under ``kg/commands``.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. Modules import heavy libraries inside ``func`` so ``kg --help`` is fast.
:func:`build_command_parser` and :func:`run_command` are shared with the ``motor`` command.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from kg.errors import KGError
from kg.temporaries import target_of

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


def build_command_parser(prog: str, description: str, modules: Sequence[str]) -> argparse.ArgumentParser:
    """A top-level parser with the sub-command of every module in ``modules`` registered."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def run_command(prog: str, parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv``, run the chosen sub-command and turn library errors into exit code 1."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (KGError, ValueError) as err:
        print(f"{prog} {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `kg stats STORE | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as err:
        # A file the system refused (read-only output directory, full disk, missing file): an
        # input error like any other, not a traceback.
        print(f"{prog} {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 1


def describe_os_error(err: OSError) -> str:
    """``"FILE: reason"`` of a failed file operation; a temporary file is named by the output it
    was to become (``cannot write OUT: Permission denied``)."""
    reason = err.strerror or str(err)
    if err.filename is None:
        return reason
    target = target_of(err.filename)
    if target is not None:
        return f"cannot write {target}: {reason}"
    return f"{err.filename}: {reason}"


def build_parser() -> argparse.ArgumentParser:
    """The ``kg`` parser with every sub-command registered."""
    return build_command_parser(
        "kg", "Build and query medical knowledge for MOTOR-style pretraining.", COMMAND_MODULES
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kg``; returns the process exit code."""
    return run_command("kg", build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
