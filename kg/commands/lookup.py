"""``kg lookup``: the reports nearest to a text, their triplets and the SK sentence."""
from __future__ import annotations

import argparse
import json

from kg.sk_order import DEFAULT_SK_ORDER, SK_ORDERS

DESCRIPTION = """\
Search a store's report index with free text (built-in text embedding; run `kg index STORE`
first) and print, for each hit, its rank, report id, score, shortened text and triplets, then the
specific-knowledge (SK) sentence MOTOR's SK encoder would read.
"""
TEXT_WIDTH = 160


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``lookup`` sub-command."""
    parser = subparsers.add_parser(
        "lookup",
        help="find the reports nearest to a text and their knowledge",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", metavar="STORE", help="DuckDB store written by `kg build`")
    parser.add_argument("--text", action="append", required=True,
                        help="query text (repeat for several queries)")
    parser.add_argument("-k", type=int, default=3, help="reports per query (default: 3)")
    parser.add_argument("--index", metavar="DIR", help="index directory (default: STORE.index)")
    parser.add_argument("--max-tokens", type=int, default=90,
                        help="SK sentence budget in whitespace tokens (default: 90)")
    parser.add_argument("--sk-order", choices=SK_ORDERS, default=DEFAULT_SK_ORDER,
                        help="triplet order of the SK sentence: as the reports state them (report), rarest in the "
                             f"store first (specific_first) or most frequent first (default: {DEFAULT_SK_ORDER})")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Look the texts up and print the results."""
    from kg.retrieval import KnowledgeBase

    with KnowledgeBase.open(args.store, args.index) as kb:
        results = kb.lookup_text(args.text, k=args.k, max_tokens=args.max_tokens, order=args.sk_order)
    if args.json:
        print(json.dumps([result.to_dict() for result in results], indent=1, ensure_ascii=False))
        return 0
    for number, result in enumerate(results):
        if number:
            print()
        print(f"query: {result.query}")
        for rank, (report_id, score, text, triplets) in enumerate(
            zip(result.report_ids, result.scores, result.texts, result.triplets), start=1
        ):
            print(f"{rank}. {report_id}  score {score:.3f}")
            print(f"   text: {_shorten(text)}")
            print(f"   triplets: {'; '.join(t.phrase() for t in triplets) or '(none)'}")
        print(f"SK: {result.sk_sentence or '(no triplets)'}")
    return 0


def _shorten(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 3].rstrip() + "..."
