"""``kg index``: build the FAISS report index of a store."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Build the FAISS index that specific-knowledge lookup searches.

By default every report in STORE is embedded with the built-in TF-IDF + SVD text embedding, which
is saved beside the index so `kg lookup --text` works before any model is trained. With
--embeddings/--ids, vectors from a model are indexed instead. The index is written to
STORE.index/ (or --out) and replaces an existing one only once it is complete.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``index`` sub-command."""
    parser = subparsers.add_parser(
        "index",
        help="build the FAISS index of a store's reports",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", metavar="STORE", help="DuckDB store written by `kg build`")
    parser.add_argument("--embeddings", metavar="FILE.npy", help="float (N, d) array of report embeddings")
    parser.add_argument("--ids", metavar="IDS.txt", help="report id of each embedding row, one per line")
    parser.add_argument("--type", dest="index_type", choices=("flat", "ivf", "hnsw"), default="flat",
                        help="flat: exact; ivf: inverted lists; hnsw: graph (default: flat)")
    parser.add_argument("--nlist", type=int, help="IVF lists (default: 4*sqrt(N), at most N/39)")
    parser.add_argument("--nprobe", type=int,
                        help="IVF lists searched per query (default: smallest power of two reaching recall@3 0.95)")
    parser.add_argument("--hnsw-m", type=int, help="HNSW links per node (default: 32)")
    parser.add_argument("--ef-construction", type=int, help="HNSW build candidate list (default: 40)")
    parser.add_argument("--ef-search", type=int,
                        help="HNSW search candidate list (default: smallest power of two reaching recall@3 0.95)")
    parser.add_argument("--out", metavar="DIR", help="index directory (default: STORE.index)")
    parser.add_argument("--cpu", action="store_true", help="stay on CPU even when FAISS sees a GPU")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the index and print a one-line summary."""
    from kg.index import read_meta
    from kg.retrieval import build_index

    params = {
        name: value
        for name, value in (
            ("nlist", args.nlist),
            ("nprobe", args.nprobe),
            ("hnsw_m", args.hnsw_m),
            ("ef_construction", args.ef_construction),
            ("ef_search", args.ef_search),
        )
        if value is not None
    }
    out = build_index(
        args.store,
        embeddings=args.embeddings,
        ids=args.ids,
        index_type=args.index_type,
        out=args.out,
        use_gpu=False if args.cpu else None,
        **params,
    )
    meta = read_meta(out)
    settings = ", ".join(f"{key}={value}" for key, value in sorted(meta["params"].items()))
    print(
        f"indexed {meta['count']} reports ({meta['embedding']}, dim {meta['dim']}) as {meta['type']}"
        f"{f' ({settings})' if settings else ''}; estimated recall@3 {meta['recall_at_3_estimate']:.3f} -> {out}"
    )
    return 0
