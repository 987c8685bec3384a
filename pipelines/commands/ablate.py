"""``motor ablate``: pretrain each knowledge variant alike and compare zero-shot retrieval (Table 1)."""
from __future__ import annotations

import argparse

from model.variants import KNOWLEDGE_VARIANTS, METHOD_VARIANT_NAMES
from pipelines.commands.pretrain import add_config_arguments

DESCRIPTION = """\
Pretrain MOTOR once per knowledge variant (none, gk, sk, gk+sk, full) with the same data, seed and
budget, evaluate zero-shot image-report retrieval on the test split, and write OUT/ablation.md
(the paper's Table 1 layout), OUT/ablation.png and one run directory per variant.

  motor ablate --out runs/ablation
  motor ablate --variants none,full --set train.epochs=2 --out runs/ablation-short
  motor ablate --variants none,gk --seeds 0 1 2 --out runs/ablation-seeds
  motor ablate --variants full m3ae:full arl:none arl:ak arl:rk arl:lk arl:full --out runs/methods

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
    parser.add_argument("--variants", nargs="+", default=[",".join(KNOWLEDGE_VARIANTS)],
                        help=f"knowledge variants (default: {','.join(KNOWLEDGE_VARIANTS)}) and method variants "
                             f"({', '.join(METHOD_VARIANT_NAMES)}), separated by commas or spaces")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                        help="training seeds: every variant runs once per seed (OUT/<variant>/seed_<s>/) and the "
                             "table gives mean ± std over seeds, with intervals and tests over studies, seeds pooled "
                             "(default: train.seed once, OUT/<variant>/)")
    parser.add_argument("--out", metavar="DIR", default="runs/ablation", help="output directory (default: runs/ablation)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ablation and print its table."""
    from pipelines.ablate import ablate, parse_variants
    from pipelines.config import PretrainConfig, builtin_config, load_config

    variants = parse_variants(",".join(args.variants))
    overrides = list(args.overrides) + ([f"data.manifest={args.data}"] if args.data else [])
    config = load_config(PretrainConfig, args.config or builtin_config("ablate_tiny"), overrides)
    ablate(config, variants, args.out, seeds=args.seeds, show_progress=not args.no_progress)
    return 0
