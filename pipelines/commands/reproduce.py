"""``motor reproduce TABLE``: a table of the MOTOR paper as one command (recipes in pipelines/configs/reproduce/)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Reproduce a table of the MOTOR paper: pretrain MOTOR on MIMIC-CXR at the paper's settings (or start
from --from RUN), then finetune and evaluate each run of the table at the paper's settings, and write
OUT/table.md and OUT/table.json with the table's metrics beside one run bundle per step.

  table1  zero-shot and finetuned image-report retrieval (MIMIC-CXR)
  table2  report generation (IU-Xray, MIMIC-CXR)
  table3  diagnosis on ChestX-ray14 (14 classes + No Finding)
  table4  CheXpert-14 diagnosis on MIMIC-CXR
  table5  medical VQA (VQA-RAD, SLAKE)

Datasets are the outputs of `motor build-dataset`, passed as --data KEY=PATH (keys: mimic-cxr,
iu-xray, chestxray14, vqa-rad, slake); a missing one is named with the command that builds it.
Each recipe is a YAML file under pipelines/configs/reproduce/ whose header says where every
setting comes from in the reference code and what motor-kg does differently.

  motor reproduce table2 --dry-run --data iu-xray=data/iu-xray --data mimic-cxr=data/mimic-cxr --out runs/t2
  motor reproduce table2 --data iu-xray=data/iu-xray --data mimic-cxr=data/mimic-cxr --out runs/t2
  motor reproduce table5 --from runs/t2/pretrain --data vqa-rad=data/vqa-rad --data slake=data/slake --out runs/t5
  motor reproduce table1 --smoke --out runs/t1-smoke     # tiny sizes on the synthetic set, seconds on a CPU
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` sub-command."""
    from pipelines.reproduce import TABLES

    parser = subparsers.add_parser(
        "reproduce", help="run a table of the MOTOR paper (recipes at the paper's settings)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("table", metavar="TABLE", help=f"{', '.join(TABLES)} (or 1 … 5)")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=PATH",
                        help="a built dataset (manifest, or its directory; VQA: vqa.jsonl or its directory); repeatable")
    parser.add_argument("--from", dest="from_run", metavar="RUN_DIR|MODEL_DIR",
                        help="finetune this pretrained MOTOR instead of pretraining into OUT/pretrain")
    parser.add_argument("--out", metavar="DIR", required=True, help="output directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of every finetuning config (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and resolved configs; run nothing")
    parser.add_argument("--smoke", action="store_true",
                        help="run every step at tiny size on the embedded synthetic set (checks the recipe, not the paper)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the plan (--dry-run) or run it."""
    from pipelines.reproduce import describe, load_recipe, parse_data, plan, reproduce

    data = parse_data(args.data)
    if args.dry_run:
        recipe = load_recipe(args.table)
        steps = plan(recipe, args.out, data=data, from_run=args.from_run, smoke=args.smoke, overrides=args.overrides)
        print(describe(recipe, steps), end="")
        return 0
    reproduce(args.table, args.out, data=data, from_run=args.from_run, smoke=args.smoke, overrides=args.overrides,
              show_progress=not args.no_progress)
    return 0
