"""``motor visualize RUN``: the paper's Figures 2–6 from a run's model, and RUN/report.html."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Draw the MOTOR paper's figures from a run's own model on the test split of the data it trained on,
each as RUN/figures/figN.png beside the data behind it (JSON or CSV), then write RUN/report.html
(static, offline) with the run's summary table and the figures.

  fig2  SK hits of a test image: top-k reports of the model's report queue, scores, triplets, SK sentences
  fig3  GK attention: image [CLS] over the nodes, and the most attended nodes' maps over the image
  fig4  t-SNE of test image and report embeddings coloured by finding, one panel per run (--compare)
  fig5  share of GK attention going to each finding's node, per ground-truth finding
  fig6  greedy generated reports of each run (--compare) beside the reference, with CE labels

  motor visualize runs/demo --figure all
  motor visualize runs/ablation/full --figure fig4 fig6 --compare runs/ablation/none runs/ablation/gk
  motor visualize runs/demo --figure fig2 fig3 --study 5

A figure the run cannot draw (Figs. 3 and 5 need the GK path, Fig. 2 the SK path) is skipped with
the reason when several are asked for, and an error when it is the only one.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``visualize`` sub-command."""
    parser = subparsers.add_parser(
        "visualize", help="draw the paper's figures 2-6 from a run and write RUN/report.html",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN_DIR", help="a pretraining or finetuning run directory")
    parser.add_argument("--figure", nargs="+", default=["all"], metavar="FIG",
                        help="fig2, fig3, fig4, fig5, fig6 or all (default: all)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR",
                        help="further runs drawn side by side in fig4 and fig6 (e.g. other variants)")
    parser.add_argument("--study", type=int, default=0, help="test study (position in the test split) of fig2 and fig3")
    parser.add_argument("--reports", type=int, default=4, help="test studies shown in fig6 (default: 4)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Draw the figures and write the report page."""
    from pipelines.visualize import FIGURES, visualize

    figures = list(FIGURES) if "all" in args.figure else args.figure
    visualize(args.run, figures, compare=args.compare, study=args.study, n_reports=args.reports)
    return 0
