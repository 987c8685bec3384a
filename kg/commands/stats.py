"""``kg stats``: what a knowledge store holds."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stats`` sub-command."""
    parser = subparsers.add_parser(
        "stats",
        help="row counts, entity labels, top triplets and metadata of a store",
        description="Print row counts per table, entity label and relation counts, the most frequent "
                    "triplets and the build metadata of a store written by `kg build`.",
    )
    parser.add_argument("store", metavar="STORE", help="DuckDB store written by `kg build`")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="triplets to list (default: 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the statistics of ``args.store``."""
    from kg.store import open_store, store_stats

    con = open_store(args.store, read_only=True)
    try:
        stats = store_stats(con, top=args.top)
    finally:
        con.close()
    if args.json:
        print(json.dumps(stats, indent=1, ensure_ascii=False))
        return 0
    print(f"store: {args.store}")
    _section("tables", stats["tables"])
    _section("entity labels", stats["labels"])
    if stats["source_labels"] and stats["source_labels"] != stats["labels"]:
        _section("entity labels as written in the input", stats["source_labels"])
    _section("relations", stats["relations"])
    print(f"top {len(stats['top_triplets'])} triplets (count, reports):")
    for t in stats["top_triplets"]:
        print(f"  {t['count']:>9,} {t['n_reports']:>9,}  {t['head']} --{t['relation']}--> {t['tail']}"
              f"  [{t['head_label']} -> {t['tail_label']}]")
    print("metadata:")
    for key, value in stats["metadata"].items():
        print(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    return 0


def _section(title: str, counts: dict[str, int]) -> None:
    print(f"{title}:")
    width = max((len(name) for name in counts), default=0)
    for name, count in counts.items():
        print(f"  {name:<{width}}  {count:>12,}")
