"""``kg label``: CheXpert and GK-finding labels of free-text reports."""
from __future__ import annotations

import argparse

from kg.commands.extract import add_input_arguments, warn_skipped

DESCRIPTION = """\
Label each report with the 14 CheXpert observations and the 20 GK findings: 1 positive,
0 negative, -1 uncertain, blank when not mentioned (CheXpert labeler semantics, e.g. "No Finding"
is 1 only when nothing but support devices is positive or uncertain). Labels come from the same
annotation as `kg extract`. Columns: report_id, the CheXpert classes, then gk:<finding id>.
The output format follows the extension (.csv or .parquet) and replaces OUT only once complete.

examples:
  kg label --input reports_dev.csv --out labels.csv
  kg label --input mimic/files --input-format mimic-txt --out labels.parquet
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``label`` sub-command."""
    parser = subparsers.add_parser(
        "label",
        help="CheXpert and GK-finding labels of free-text reports",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(parser)
    parser.add_argument("--out", required=True, metavar="labels.csv|labels.parquet", help="output file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Label the corpus, write OUT and print a one-line summary with positive counts."""
    from kg.label import chexpert_columns, label_reports, write_labels
    from kg.reports_io import ReadStats

    if not args.out.lower().endswith((".csv", ".parquet")):
        raise ValueError(f"{args.out}: output must end in .csv or .parquet")
    stats = ReadStats()
    frame = label_reports(
        args.input,
        backend=args.backend,
        input_format=args.input_format,
        on_empty="error" if args.strict else "skip",
        on_not_english="error" if args.strict else "skip",
        stats=stats,
        stanza_dir=args.stanza_dir,
        scispacy_model=args.scispacy_model,
    )
    write_labels(frame, args.out)
    warn_skipped("kg label", stats)
    positives = ", ".join(f"{c} {int((frame[c] == 1).sum())}" for c in chexpert_columns())
    skipped = f"; skipped {len(stats.skipped)} without text" if stats.skipped else ""
    print(f"labelled {len(frame)} reports{skipped} -> {args.out}")
    print(f"positive: {positives}")
    return 0
