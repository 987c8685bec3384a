"""``motor synth``: generate the embedded synthetic chest X-ray dataset."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    parser = subparsers.add_parser(
        "synth",
        help="generate the synthetic chest X-ray dataset (images, reports, labels, RadGraph, VQA)",
        description="Generate synthetic PA chest radiographs with consistent reports, CheXpert and GK labels, "
        "gold RadGraph annotations, VQA pairs and train/val/test splits. Deterministic: the same arguments "
        "give byte-identical files, for any number of workers.",
    )
    parser.add_argument("--out", required=True, help="output directory (replaced if it holds an earlier synthetic set)")
    parser.add_argument("--n", type=int, default=2000, help="number of studies (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--image-size", type=int, default=224, help="image width and height in pixels (default: 224)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default: 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and print a one-screen summary."""
    from pipelines.data.synthetic import generate

    summary = generate(args.out, n=args.n, seed=args.seed, image_size=args.image_size, workers=args.workers,
                       progress=not args.quiet)
    splits = ", ".join(f"{name} {count}" for name, count in summary.splits.items())
    print(f"wrote {summary.n} studies to {summary.out_dir} ({splits})")
    print(f"normal: {summary.normal_fraction:.1%}; VQA: {summary.questions['closed']} closed "
          f"({summary.questions['yes']} yes / {summary.questions['no']} no), {summary.questions['open']} open")
    prevalence = sorted(summary.prevalence.items(), key=lambda item: -item[1])
    print("findings: " + ", ".join(f"{name} {count}" for name, count in prevalence if name != "normal"))
    return 0
