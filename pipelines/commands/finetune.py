"""``motor finetune``: finetune a pretrained MOTOR on a downstream task and evaluate it."""
from __future__ import annotations

import argparse

from pipelines.commands.pretrain import add_config_arguments
from pipelines.tasks import TASKS

DESCRIPTION = """\
Finetune a pretrained MOTOR on one downstream task, then evaluate it on the test split:

  retrieval   ITC + ITM on E_v and E_t; R@1/5/10 of report and image retrieval, zero-shot and finetuned
  generation  LM on E_v and the decoder; BLEU-1..4, METEOR, ROUGE-L, CIDEr, clinical efficacy and
              F1-RadGraph (greedy and beam search) next to the most-frequent-report baseline
  diagnosis   14 linear heads on E_v (BCE); AUROC per class and mean, macro/micro F1
  vqa         answer classifier over E_v->t; open, closed and overall accuracy next to the majority answer

  motor finetune --task diagnosis --from runs/demo --out runs/diagnosis
  motor finetune --task vqa --from runs/pretrain/model --data DATA/manifest.jsonl --set train.epochs=10

--from takes a pretraining run directory (its model/ and the manifest it trained on) or a saved model
directory of any method (motor, m3ae, arl, medvill). Without --config the task's shipped config is
used: pipelines/configs/finetune_<task>_<method>.yaml when the method has its own, else
finetune_<task>.yaml. The run directory receives the run bundle, metrics.json, metrics.md and model/ (+ head
files for diagnosis and VQA, read back by `motor evaluate`).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``finetune`` sub-command."""
    parser = subparsers.add_parser(
        "finetune", help="finetune and evaluate on retrieval, generation, diagnosis or VQA",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=TASKS, help="downstream task")
    parser.add_argument("--from", dest="init_from", required=True, metavar="RUN_DIR|MODEL_DIR",
                        help="pretraining run directory or saved model directory")
    add_config_arguments(parser, "finetune_<task>")
    add_radgraph_argument(parser)
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/finetune-<task>)")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs (RUN_DIR/tensorboard)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the configuration and finetune."""
    from model.pretrained import read_method
    from pipelines.config import FinetuneConfig, finetune_config_for, load_config
    from pipelines.distributed import cleanup
    from pipelines.finetune import finetune
    from pipelines.tasks.sources import resolve_source

    overrides = [f"task={args.task}", f"init_from={args.init_from}", *args.overrides,
                 *radgraph_override(args.task, args.radgraph_annotations)]
    if args.data:
        overrides.append(f"data.manifest={args.data}")
    # Without --config: the task's shipped config, the pretrained method's own when it has one.
    default = None if args.config else finetune_config_for(args.task, read_method(resolve_source(args.init_from).model_dir))
    config = load_config(FinetuneConfig, args.config or default, overrides)
    out = args.out or f"runs/finetune-{args.task}"
    try:
        finetune(config, out, show_progress=not args.no_progress, tensorboard=args.tensorboard)
    finally:
        cleanup()
    print(f"run directory: {out}")
    return 0


def add_radgraph_argument(parser: argparse.ArgumentParser) -> None:
    """``--radgraph-annotations HYPS.json REFS.json`` (generation), shared with ``motor evaluate``."""
    parser.add_argument(
        "--radgraph-annotations", nargs=2, metavar=("HYPS.json", "REFS.json"),
        help="generation: the radgraph package's annotations of the greedy generated and of the reference test "
             "reports, for F1-RadGraph (default: motor-kg's rules annotator annotates them)")


def radgraph_override(task: str, files: list[str] | None) -> list[str]:
    """The ``--set`` item of ``--radgraph-annotations`` (absolute paths), or none.

    Raises:
        InputError: the task is not generation, or a file does not exist (checked now, before
            any training or generation).
    """
    import json
    from pathlib import Path

    from kg.errors import InputError

    if files is None:
        return []
    if task != "generation":
        raise InputError(f"only report generation is scored with F1-RadGraph, not {task}",
                         field="--radgraph-annotations")
    for path in files:
        if not Path(path).is_file():
            raise InputError("no such file", file=path, field="--radgraph-annotations")
    return ["eval.radgraph_annotations=" + json.dumps([str(Path(path).resolve()) for path in files])]
