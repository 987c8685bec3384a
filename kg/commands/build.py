"""``kg build``: build a knowledge store (or the GK exports) from one source."""
from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

from kg.errors import InputError
from kg.normalize import ABSENT_MODES
from kg.radgraph import DEFAULT_LABELER, FORMATS, LABELERS

DESCRIPTION = """\
Build knowledge from one source:

  radgraph  RadGraph-format annotations (dataset JSON, `radgraph` package output or JSONL)
            -> DuckDB store; without --input, the bundled sample corpus. RadGraph-XL labels
            ('Anatomy::measurement::definitely present', ...) are kept as written beside the
            coarse label (ANAT-DP, OBS-DP, OBS-U, OBS-DA) that triplets use
  reports   free-text reports, annotated by `kg.extract` -> DuckDB store
  gk        the general-knowledge graph -> DIR/<name>.pt (+ .nodes.json), .graphml, .json
  umls      link an existing store's entities to a UMLS release and add its UMLS tables

examples:
  kg build --source radgraph --input train.json --input dev.json --out radgraph.duckdb
  kg build --source radgraph --out sample.duckdb
  kg build --source radgraph --input mimic_radgraph.jsonl --workers 8 --out mimic.duckdb
  kg build --source reports --input reports.csv --input-format iu-xray-csv --out iu.duckdb
  kg build --source gk --out gk/
  kg build --source umls --umls-dir 2024AA/META --store radgraph.duckdb --sab SNOMEDCT_US
"""
SOURCES = ("radgraph", "reports", "gk", "umls")
#: Skipped reports whose errors are printed after the summary; the rest are only counted.
MAX_LISTED_ERRORS = 20

#: Options each source accepts, besides --source and --no-progress; anything else is an error.
SOURCE_OPTIONS = {
    "radgraph": ("input", "out", "format", "labeler", "absent", "skip_invalid", "workers"),
    "reports": ("input", "out", "input_format", "backend", "absent", "strict"),
    "gk": ("graph", "out"),
    "umls": ("umls_dir", "store", "sab", "sty", "linker"),
}
REQUIRED_OPTIONS = {"radgraph": ("out",), "reports": ("input", "out"), "gk": ("out",), "umls": ("umls_dir", "store")}
DEFAULTS = {
    "format": "auto",
    "labeler": DEFAULT_LABELER,
    "absent": ABSENT_MODES[0],
    "skip_invalid": False,
    "workers": "auto",
    "input_format": "auto",
    "backend": "rules",
    "strict": False,
    "linker": "scispacy",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` sub-command."""
    parser = subparsers.add_parser(
        "build",
        help="build a knowledge store or the GK exports",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", required=True, choices=SOURCES, help="what to build from")
    parser.add_argument("--input", action="append", metavar="FILE",
                        help="input file (repeat for several); radgraph defaults to the bundled sample")
    parser.add_argument("--out", metavar="PATH", help="store to write (radgraph, reports) or directory (gk)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    radgraph = parser.add_argument_group("radgraph")
    radgraph.add_argument("--format", choices=FORMATS,
                          help="input layout (default: auto, by extension and content)")
    radgraph.add_argument("--labeler", choices=LABELERS,
                          help=f"annotation read from two-annotator (test split) reports (default: {DEFAULT_LABELER})")
    radgraph.add_argument("--skip-invalid", action="store_true", default=None,
                          help="skip and count invalid reports instead of stopping at the first")
    radgraph.add_argument("--workers", type=_workers, metavar="N|auto",
                          help="processes parsing the input (default: auto, one per CPU up to 8 for JSONL "
                               "inputs of 32 MiB or more, else 0 = this process); the store is the same for any N")
    radgraph.add_argument("--absent", choices=ABSENT_MODES,
                          help="triplets of absent (OBS-DA) findings: negate writes 'no <finding>' (default), "
                               "keep leaves the text, drop leaves them out; also for --source reports")
    reports = parser.add_argument_group("reports")
    reports.add_argument("--input-format", metavar="FORMAT",
                         help="auto (default), iu-xray-csv, mimic-txt, jsonl or text")
    reports.add_argument("--backend", metavar="NAME", help="annotator: rules (default), stanza or scispacy")
    reports.add_argument("--strict", action="store_true", default=None,
                         help="stop at the first report not in English instead of skipping it")
    gk = parser.add_argument_group("gk")
    gk.add_argument("--graph", metavar="FILE", help="GK definition YAML (default: the shipped chest graph)")
    umls = parser.add_argument_group("umls")
    umls.add_argument("--umls-dir", metavar="DIR", help="UMLS release directory with MRCONSO/MRSTY/MRREL.RRF")
    umls.add_argument("--store", metavar="STORE", help="existing store to add the UMLS tables to")
    umls.add_argument("--sab", action="append", metavar="SAB", help="source vocabulary to keep (repeat; default all)")
    umls.add_argument("--sty", action="append", metavar="TUI", help="semantic type to keep (repeat; default all)")
    umls.add_argument("--linker", choices=("scispacy", "exact"), help="mention linker (default: scispacy)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options for the chosen source and build."""
    _check_options(args)
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return {"radgraph": _build_radgraph, "reports": _build_reports, "gk": _build_gk, "umls": _build_umls}[
        args.source
    ](args)


def _check_options(args: argparse.Namespace) -> None:
    accepted = SOURCE_OPTIONS[args.source]
    for name in itertools.chain.from_iterable(SOURCE_OPTIONS.values()):
        if name not in accepted and getattr(args, name) is not None:
            raise InputError(f"{_flag(name)} does not apply to --source {args.source}")
    for name in REQUIRED_OPTIONS[args.source]:
        if getattr(args, name) is None:
            raise InputError(f"--source {args.source} needs {_flag(name)}")


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        workers = int(value)
    except ValueError:
        workers = -1
    if workers < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 or 'auto', got {value!r}")
    return workers


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _build_radgraph(args: argparse.Namespace) -> int:
    from kg.build import build_store
    from kg.radgraph import BUNDLED_SAMPLE
    from kg.radgraph_reader import RadGraphReader
    from kg.radgraph_batches import auto_workers

    inputs = [Path(p) for p in args.input] if args.input else [BUNDLED_SAMPLE]
    reader = RadGraphReader(inputs, format=args.format, labeler=args.labeler, skip_invalid=args.skip_invalid)
    reader.workers = auto_workers(reader) if args.workers == "auto" else args.workers
    options = {"format": args.format, "labeler": args.labeler, "skip_invalid": args.skip_invalid}
    summary = build_store(reader, args.out, source="radgraph", inputs=inputs, options=options,
                          progress=not args.no_progress, absent=args.absent)
    summary = dataclasses.replace(summary, skipped=len(reader.errors))
    print(summary)
    for error in reader.errors[:MAX_LISTED_ERRORS]:
        print(f"  skipped: {error}")
    if len(reader.errors) > MAX_LISTED_ERRORS:
        print(f"  ... and {len(reader.errors) - MAX_LISTED_ERRORS:,} more skipped reports")
    return 0


def _build_reports(args: argparse.Namespace) -> int:
    from kg.build import build_store
    from kg.commands.extract import warn_skipped
    from kg.extract import extract_reports
    from kg.reports_io import ReadStats

    inputs = [Path(p) for p in args.input]
    stats = [ReadStats() for _ in inputs]
    records = itertools.chain.from_iterable(
        extract_reports(path, input_format=args.input_format, backend=args.backend, stats=counter,
                        on_not_english="error" if args.strict else "skip")
        for path, counter in zip(inputs, stats)
    )
    options = {"input_format": args.input_format, "backend": args.backend}
    summary = build_store(records, args.out, source="reports", inputs=inputs, options=options,
                          progress=not args.no_progress, absent=args.absent)
    skipped = sum(len(counter.skipped) + len(counter.not_english) for counter in stats)
    print(dataclasses.replace(summary, skipped=skipped))
    warn_skipped("kg build", ReadStats(not_english=[i for counter in stats for i in counter.not_english]))
    return 0


def _build_gk(args: argparse.Namespace) -> int:
    from kg.gk import load_gk
    from kg.gk_export import export_gk_all

    gk = load_gk(args.graph)
    for path in export_gk_all(gk, args.out):
        print(f"wrote {path}")
    return 0


def _build_umls(args: argparse.Namespace) -> int:
    from kg.umls import build_umls

    summary = build_umls(args.store, args.umls_dir, vocabularies=args.sab, semantic_types=args.sty,
                         linker=args.linker, progress=not args.no_progress)
    print(summary)
    return 0
