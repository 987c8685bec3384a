"""``motor pretrain``: pretrain MOTOR (single process, or one process per GPU under torchrun)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from model.registry import method_names
from model.variants import KNOWLEDGE_VARIANTS

DESCRIPTION = """\
Pretrain MOTOR from a YAML config (default: the shipped tiny CPU config), with command-line
overrides. Without --data the embedded synthetic set is generated into the run directory.

  motor pretrain --config pipelines/configs/pretrain_tiny.yaml --knowledge full --out runs/pretrain
  motor pretrain --method m3ae --out runs/m3ae    # pipelines/configs/pretrain_m3ae_tiny.yaml
  motor pretrain --method m3ae --set model.coattention.mim.enabled=false --out runs/m3ae-mlm
  motor pretrain --out runs/pretrain --set train.epochs=2 --set optim.lr=3e-4
  motor pretrain --resume runs/pretrain          # continue exactly from the newest checkpoint that verifies
  torchrun --nproc_per_node 4 -m pipelines.cli pretrain --config pipelines/configs/pretrain_base.yaml \\
      --data /data/mimic/manifest.jsonl --out runs/base

The run directory receives config.yaml, env.json, git.json, run.json, metrics.jsonl, metrics.json,
checkpoints/ and model/ (the pretrained model for `motor finetune --from`).
"""


def add_config_arguments(parser: argparse.ArgumentParser, default_config: str) -> None:
    """``--config``, ``--data`` and ``--set``, shared by the commands that train."""
    parser.add_argument("--config", metavar="YAML",
                        help=f"run configuration (default: the shipped {default_config}.yaml)")
    parser.add_argument("--data", metavar="PATH",
                        help="manifest JSONL or a directory holding manifest.jsonl (default: generate the synthetic set)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.batch_size=8 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` sub-command."""
    parser = subparsers.add_parser(
        "pretrain", help="pretrain MOTOR", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, "pretrain_tiny")
    parser.add_argument("--method", choices=method_names(),
                        help="the method (overrides model.method); without --config, its shipped "
                             "pretrain_<method>_tiny.yaml when there is one")
    parser.add_argument("--knowledge", choices=KNOWLEDGE_VARIANTS,
                        help="MOTOR's knowledge switch (overrides model.knowledge)")
    parser.add_argument("--out", metavar="RUN_DIR", default="runs/pretrain", help="run directory (default: runs/pretrain)")
    parser.add_argument("--resume", metavar="RUN_DIR|auto",
                        help="continue a run from its newest checkpoint that verifies (damaged newer ones are "
                             "named and skipped); 'auto' resumes --out when it has one")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs (RUN_DIR/tensorboard)")
    parser.set_defaults(func=run)


def _default_config(method: str | None) -> Path:
    """The shipped config a plain ``motor pretrain [--method M]`` starts from."""
    from pipelines.config import CONFIG_DIR, builtin_config

    if method and (CONFIG_DIR / f"pretrain_{method}_tiny.yaml").is_file():
        return builtin_config(f"pretrain_{method}_tiny")
    return builtin_config("pretrain_tiny")


def run(args: argparse.Namespace) -> int:
    """Resolve the configuration and resume point, then pretrain."""
    from pipelines.checkpoint import find_resume_point, has_checkpoints
    from pipelines.config import PretrainConfig, builtin_config, load_config
    from pipelines.distributed import cleanup
    from pipelines.pretrain import pretrain

    overrides = list(args.overrides)
    if args.method:
        overrides.append(f"model.method={args.method}")
    if args.knowledge:
        overrides.append(f"model.knowledge={args.knowledge}")
    if args.data:
        overrides.append(f"data.manifest={args.data}")
    out = Path(args.out)
    resume_from = None
    config_path = Path(args.config) if args.config else _default_config(args.method)
    if args.resume is not None:
        # The newest checkpoint that verifies; damaged newer ones are passed over and named.
        point = None
        if args.resume != "auto":
            point = find_resume_point(args.resume)
        elif has_checkpoints(out):
            point = find_resume_point(out)
        if point is not None:
            if int(os.environ.get("RANK", "0")) == 0:
                print(point.describe())
            resume_from, out = point.checkpoint, point.checkpoint.parents[1]
            # The run's own resolved config; overrides still apply (and are recorded).
            config_path = out / "config.yaml"
    config = load_config(PretrainConfig, config_path, overrides)
    try:
        result = pretrain(config, out, resume_from=resume_from, show_progress=not args.no_progress,
                          tensorboard=args.tensorboard)
    finally:
        cleanup()
    if result.metrics:
        print(f"run directory: {out}")
    return 0
