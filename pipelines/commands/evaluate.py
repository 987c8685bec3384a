"""``motor evaluate``: score a model on a downstream task's test split."""
from __future__ import annotations

import argparse

from pipelines.commands.finetune import add_radgraph_argument, radgraph_override
from pipelines.tasks import TASKS

DESCRIPTION = """\
Evaluate a model on the test split of a downstream task and write metrics.json and metrics.md.

  motor evaluate --task diagnosis --model runs/diagnosis
  motor evaluate --task retrieval --model runs/pretrain --data DATA/manifest.jsonl   # zero-shot
  motor evaluate --task generation --model runs/generation --radgraph-annotations hyps.json refs.json

--model takes a `motor finetune` run directory (needed for diagnosis and VQA, whose heads it holds)
or, for retrieval and generation, any pretraining run or saved model directory. Without --data the
manifest the model's run trained on is used.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a model on a downstream task", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=TASKS, help="downstream task")
    parser.add_argument("--model", required=True, metavar="DIR", help="finetune run, pretraining run or model directory")
    parser.add_argument("--data", metavar="PATH", help="manifest JSONL or a directory holding manifest.jsonl")
    parser.add_argument("--vqa-data", metavar="PATH", help="VQA manifest (default: vqa.jsonl beside the manifest)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: MODEL_DIR/eval-<task>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an evaluation setting, e.g. --set eval.num_beams=5 (repeatable)")
    add_radgraph_argument(parser)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (default: auto)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics table."""
    from pathlib import Path

    from pipelines.config import FinetuneConfig, load_config
    from pipelines.finetune import evaluate_run

    config = load_config(FinetuneConfig, None, [f"task={args.task}", *args.overrides,
                                                *radgraph_override(args.task, args.radgraph_annotations)])
    out = args.out or str(Path(args.model) / f"eval-{args.task}")
    evaluate_run(args.task, args.model, out, manifest=args.data, vqa_manifest=args.vqa_data, eval_config=config.eval,
                 device=args.device)
    print(f"metrics: {out}/metrics.md")
    return 0
