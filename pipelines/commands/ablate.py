"""``motor ablate``: pretrain each knowledge variant alike and compare zero-shot retrieval (Table 1)."""
from __future__ import annotations

import argparse

from model.registry import method_names
from model.variants import KNOWLEDGE_VARIANTS, METHOD_VARIANT_NAMES
from pipelines.commands.pretrain import add_config_arguments
from pipelines.tasks import TASKS

#: ``--tasks`` default of ``--methods`` (:data:`pipelines.compare_methods.DEFAULT_TASKS`, without importing torch).
DEFAULT_TASKS = ("retrieval", "diagnosis", "generation", "vqa")

DESCRIPTION = """\
Pretrain MOTOR once per knowledge variant (none, gk, sk, gk+sk, full) with the same data, seed and
budget, evaluate zero-shot image-report retrieval on the test split, and write OUT/ablation.md
(the paper's Table 1 layout), OUT/ablation.png and one run directory per variant.

  motor ablate --out runs/ablation
  motor ablate --variants none,full --set train.epochs=2 --out runs/ablation-short
  motor ablate --variants none,gk --seeds 0 1 2 --out runs/ablation-seeds
  motor ablate --variants full m3ae:full arl:none arl:ak arl:rk arl:lk arl:full --out runs/methods
  motor ablate --variants medvill:bi medvill:s2s medvill:bar medvill:bi+s2s medvill:non_crossing --out runs/masks

--methods pretrains each named method in its default form (MOTOR with all its knowledge, M3AE with
MLM + MIM, ARL with AK + RK + LK, MedViLL with the BAR mask) on the same data, seed and budget, plus
any --variants, finetunes and evaluates every row on the same --tasks, and writes OUT/methods.md,
OUT/methods.csv and OUT/methods.png (one row per method or variant, chance and baselines beside):

  motor ablate --methods motor m3ae arl medvill --out runs/methods
  motor ablate --methods motor medvill --variants medvill:s2s --tasks diagnosis vqa --out runs/short
  motor ablate --methods motor m3ae arl medvill --finetune-set train.epochs=1 --out runs/methods-short

Default config: pipelines/configs/ablate_tiny.yaml, the tiny pretraining budget (600 steps of 16)
on 2,000 synthetic studies at 64 px, whose 200 test studies make one study 0.5 points of recall.
--seeds 0 1 2 runs every variant once per seed (OUT/<variant>/seed_<s>/): the table gives mean ± std
over seeds, 95 % bootstrap intervals over test studies and paired permutation p-values against
none, seeds pooled. Budget: see README, "Knowledge ablation: signal or noise".
Variants already completed with the same settings are reused, so an interrupted ablation picks up
where it stopped.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ablate`` sub-command."""
    parser = subparsers.add_parser(
        "ablate", help="knowledge ablation: pretrain and compare the variants",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser, "ablate_tiny")
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"knowledge variants (default: {','.join(KNOWLEDGE_VARIANTS)}, none with --methods) and "
                             f"method variants ({', '.join(METHOD_VARIANT_NAMES)}), separated by commas or spaces")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help=f"compare these methods ({', '.join(method_names())}), each in its default form, "
                             "pretrained, finetuned and evaluated alike: OUT/methods.md, .csv, .png")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(DEFAULT_TASKS),
                        help=f"with --methods: downstream tasks of every row (default: {' '.join(DEFAULT_TASKS)})")
    parser.add_argument("--finetune-set", dest="finetune_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="with --methods: override a finetuning setting of every task "
                                                  "(repeatable), e.g. train.epochs=1")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                        help="training seeds: every variant runs once per seed (OUT/<variant>/seed_<s>/) and the "
                             "table gives mean ± std over seeds, with intervals and tests over studies, seeds pooled "
                             "(default: train.seed once, OUT/<variant>/; not with --methods: run seeds with --set train.seed=S "
                             "into separate OUT directories and pool them with motor report)")
    parser.add_argument("--out", metavar="DIR", default="runs/ablation", help="output directory (default: runs/ablation)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ablation and print its table."""
    from kg.errors import InputError
    from pipelines.ablate import ablate, parse_variants
    from pipelines.config import PretrainConfig, builtin_config, load_config

    overrides = list(args.overrides) + ([f"data.manifest={args.data}"] if args.data else [])
    config = load_config(PretrainConfig, args.config or builtin_config("ablate_tiny"), overrides)
    if args.methods:
        if args.seeds:
            raise InputError("--seeds is for knowledge ablations; compare methods over seeds by running --methods "
                             "once per --set train.seed=S into separate --out directories and pooling them with "
                             "motor report", field="--seeds")
        from pipelines.compare_methods import compare_methods, parse_methods

        variants = parse_variants(",".join(args.variants)) if args.variants else []
        result = compare_methods(config, parse_methods(args.methods), args.out, variants=variants, tasks=args.tasks,
                                 finetune_overrides=args.finetune_overrides, show_progress=not args.no_progress)
        # The table is written either way; a task that failed for a row makes the command fail.
        return 1 if result.metrics.get("failures") else 0
    variants = parse_variants(",".join(args.variants or [",".join(KNOWLEDGE_VARIANTS)]))
    ablate(config, variants, args.out, seeds=args.seeds, show_progress=not args.no_progress)
    return 0
