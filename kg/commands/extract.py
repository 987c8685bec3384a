"""``kg extract``: annotate free-text reports as RadGraph-format entities and relations."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from kg.extract import BACKENDS
from kg.reports_io import INPUT_FORMATS

if TYPE_CHECKING:
    from kg.reports_io import ReadStats

DESCRIPTION = """\
Annotate radiology reports with RadGraph-format entities (ANAT-DP, OBS-DP, OBS-U, OBS-DA) and
relations (located_at, suggestive_of, modify), offline.

Inputs: an IU-Xray CSV (uid, findings, impression), MIMIC-CXR style .txt reports (a file or a
directory tree), JSONL ({"id" or "report_id", "text"}) or plain text (one report per line). The
findings and impression sections are annotated; reports without text are skipped and counted.
The output is RadGraph JSON (id -> record) for .json, one record per line for .jsonl; it replaces
OUT only once complete.

examples:
  kg extract --input reports_dev.csv --out iu_radgraph.json
  kg extract --input mimic/files --input-format mimic-txt --out mimic.jsonl
  kg extract --input notes.jsonl --backend stanza --stanza-dir ~/stanza_resources --out notes.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``extract`` sub-command."""
    parser = subparsers.add_parser(
        "extract",
        help="annotate free-text reports as RadGraph entities and relations",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(parser)
    parser.add_argument("--out", required=True, metavar="OUT.json|OUT.jsonl", help="output file")
    parser.set_defaults(func=run)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``kg extract`` and ``kg label``: input, format, back-end and its models."""
    parser.add_argument("--input", required=True, metavar="FILE", help="report corpus (file or directory)")
    parser.add_argument("--input-format", choices=INPUT_FORMATS, default="auto",
                        help="corpus format (default: auto, from the path)")
    parser.add_argument("--backend", choices=BACKENDS, default="rules",
                        help="rules: lexicon + ConText, no model files (default); stanza / scispacy: NER models")
    parser.add_argument("--stanza-dir", metavar="DIR", help="local Stanza resources directory (stanza backend)")
    parser.add_argument("--scispacy-model", metavar="NAME_OR_PATH",
                        help="installed scispaCy model package or model directory (scispacy backend)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first report without findings/impression text, or not in English, "
                             "instead of skipping it")


def warn_skipped(prog: str, stats: "ReadStats") -> None:
    """Print to stderr how many reports were skipped for not being English, naming the first few."""
    if stats.not_english:
        first = ", ".join(stats.not_english[:5]) + (", ..." if len(stats.not_english) > 5 else "")
        print(f"{prog}: warning: skipped {len(stats.not_english)} reports not in English ({first}); "
              "--strict stops at the first", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Annotate the corpus, write OUT and print a one-line summary."""
    from kg.extract import extract_reports, write_records
    from kg.reports_io import ReadStats

    stats = ReadStats()
    records = extract_reports(
        args.input,
        input_format=args.input_format,
        backend=args.backend,
        on_empty="error" if args.strict else "skip",
        on_not_english="error" if args.strict else "skip",
        stats=stats,
        stanza_dir=args.stanza_dir,
        scispacy_model=args.scispacy_model,
    )
    count = write_records(records, args.out)
    warn_skipped("kg extract", stats)
    skipped = f"; skipped {len(stats.skipped)} without text" if stats.skipped else ""
    print(f"annotated {count} reports ({args.backend}){skipped} -> {args.out}")
    return 0
