"""``motor demo``: synthetic data → knowledge store → brief MOTOR pretraining → zero-shot retrieval."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
The main job, offline on a CPU in a few minutes: generate the embedded synthetic chest X-ray set,
build the specific-knowledge store from its training reports, pretrain full MOTOR (GK + SK + MLC)
briefly with the tiny config, print zero-shot image-report retrieval next to chance level, then
finetune and evaluate the four downstream tasks briefly, each next to its baseline.

  motor demo                                  # runs/demo, 600 studies at 64 px
  motor demo --out runs/demo-small --n 200 --steps 20 --tasks diagnosis,vqa --finetune-epochs 1
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on synthetic data (a few minutes on CPU)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", metavar="DIR", default="runs/demo", help="run directory (default: runs/demo)")
    parser.add_argument("--n", type=int, default=600, help="synthetic studies (default: 600)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (default: 64)")
    parser.add_argument("--steps", type=int, help="pretraining optimizer steps (default: the tiny config's epochs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a pretraining config value (repeatable)")
    parser.add_argument("--tasks", default="retrieval,generation,diagnosis,vqa",
                        help="downstream tasks to finetune, comma-separated, or 'none' (default: all four)")
    parser.add_argument("--finetune-epochs", type=int, metavar="N",
                        help="epochs of each finetuning (default: each finetune_<task>.yaml's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from pipelines.demo import demo

    tasks = [] if args.tasks.strip() == "none" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    demo(args.out, n=args.n, image_size=args.image_size, steps=args.steps, overrides=args.overrides, tasks=tasks,
         finetune_epochs=args.finetune_epochs, show_progress=not args.no_progress)
    return 0
