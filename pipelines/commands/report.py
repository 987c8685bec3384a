"""``motor report``: one table from several run bundles, runs that differ only by seed pooled."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Tabulate run bundles (directories holding config.yaml, metrics.json and run.json).

Runs of the same kind whose config.yaml is equal once seed keys (`seed`, `*_seed`) are removed and
output paths are made relative to each run form one row: mean ± std (sample std) over them, with
n the number of runs. Rows are named by the config keys that differ between them. --group-by KEY
groups by that config key instead, pooling every other difference.

Metric keys are dotted paths into metrics.json; by default every numeric one all runs report.

--ci adds, for every metric the runs' per-study outputs (RUN/per_study/*.jsonl) can recompute
(retrieval R@K / MedR / mean_R, VQA accuracy, diagnosis mean AUROC), a bootstrap confidence
interval over the test studies, seeds pooled. --baseline ROW also compares every row with that
row over the same studies: the difference, its interval and a paired permutation p-value.

examples:
  motor report runs/full_s0 runs/full_s1 runs/full_s2 runs/none_s0 runs/none_s1
  motor report runs/* --metrics zero_shot_retrieval.itc.i2t.R@10 --group-by config.model.knowledge --out table.md
  motor report runs/* --json --out table.json
  motor report runs/abl_s*/none runs/abl_s*/full --baseline none --metrics zero_shot_retrieval.itc.i2t_R@10
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="tabulate several run bundles, seeds pooled into mean ± std",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument("--metrics", nargs="+", metavar="KEY",
                        help="dotted metric keys (default: every numeric metric all runs report)")
    parser.add_argument("--group-by", nargs="+", action="extend", default=[], metavar="KEY",
                        help="config keys to group runs by, e.g. config.model.knowledge (default: the whole config "
                             "but seeds and output paths)")
    parser.add_argument("--digits", type=int, default=3, help="decimals in the Markdown table (default: 3)")
    parser.add_argument("--json", action="store_true", help="print (and write) JSON instead of Markdown")
    parser.add_argument("--out", metavar="FILE", help="also write the table to FILE (atomically)")
    parser.add_argument("--ci", action="store_true",
                        help="add bootstrap confidence intervals over test studies (from per_study/ outputs)")
    parser.add_argument("--baseline", metavar="ROW",
                        help="also test every row against this row (its name, or a unique part of it); implies --ci")
    parser.add_argument("--resamples", type=int, default=1000,
                        help="bootstrap resamples and permutations (default: 1000)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the runs, print the table and optionally write it."""
    from kg.atomic import write_text_atomic
    from pipelines.run_report import load_run, report_json, report_table, summarise_groups

    runs = [load_run(path) for path in args.runs]
    summaries = summarise_groups(runs, metrics=args.metrics, group_by=args.group_by)
    text = report_json(summaries) if args.json else report_table(summaries, digits=args.digits)
    if args.ci or args.baseline:
        import json

        from pipelines.run_report import group_runs
        from pipelines.report_significance import significance, significance_json, significance_table

        cells = significance(group_runs(runs, args.group_by), list(summaries[0].metrics), baseline=args.baseline,
                             n_resamples=args.resamples)
        if args.json:
            groups = json.loads(text)
            text = json.dumps({"groups": groups, "significance": significance_json(cells)}, indent=1) + "\n"
        else:
            text += "\n" + significance_table(cells, args.baseline, digits=args.digits)
    print(text, end="")
    if args.out:
        write_text_atomic(args.out, text)
    return 0
