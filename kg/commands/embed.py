"""``kg embed``: TransE and GAT entity embeddings of a store's knowledge graph."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Train entity embeddings on the triplets of STORE: TransE (PyKEEN) evaluated on a held-out split
with filtered MRR and Hits@k against random embeddings, then a graph attention network (PyG)
that refines the TransE vectors over the entity graph.

--source radgraph uses the RadGraph triplets of `kg build`; --source umls the UMLS subgraph of
`kg build --source umls`. DIR receives entity_embeddings.safetensors (tensors transe, gat,
relation_transe), entities.json, relations.json and metrics.json; an existing embedding
directory is replaced only once the new one is complete.
"""

OPTIONS = ("source", "dim", "epochs", "gat_epochs", "seed", "device")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``embed`` sub-command."""
    parser = subparsers.add_parser(
        "embed",
        help="train TransE + GAT entity embeddings of a store",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", metavar="STORE", help="DuckDB store written by `kg build`")
    parser.add_argument("--out", metavar="DIR", required=True, help="output directory")
    parser.add_argument("--source", choices=("radgraph", "umls"), help="triplets to embed (default: radgraph)")
    parser.add_argument("--dim", type=int, help="embedding dimension (default: 64)")
    parser.add_argument("--epochs", type=int, help="TransE epochs (default: 100)")
    parser.add_argument("--gat-epochs", type=int, help="GAT epochs (default: 100)")
    parser.add_argument("--seed", type=int, help="random seed of split, training and sampling (default: 0)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="where to train (default: cpu)")
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="EmbedConfig options as YAML; the flags above override it")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, save and print the evaluation."""
    from dataclasses import asdict

    from kg.embeddings import EmbedConfig, embed_store

    config = EmbedConfig.from_yaml(args.config) if args.config else EmbedConfig()
    overrides = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    if overrides:
        config = EmbedConfig.from_dict({**asdict(config), **overrides})
    result = embed_store(args.store, args.out, config, progress=not args.quiet)
    metrics = result.metrics
    print(f"{metrics['entities']} entities, {metrics['relations']} relations, {metrics['triplets']} triplets "
          f"(train/valid/test {metrics['split']['training']}/{metrics['split']['validation']}/"
          f"{metrics['split']['testing']})")
    print("| embeddings | MRR | Hits@1 | Hits@3 | Hits@10 |")
    print("|---|---|---|---|---|")
    for name, values in (("random", metrics["random_baseline"]["test"]), ("TransE", metrics["transe"]["test"])):
        print(f"| {name} | {values['mean_reciprocal_rank']:.3f} | {values['hits_at_1']:.3f} | "
              f"{values['hits_at_3']:.3f} | {values['hits_at_10']:.3f} |")
    gat = metrics["gat"]
    print(f"GAT loss {gat['loss_first']:.3f} -> {gat['loss_last']:.3f}; held-out pair AUC "
          f"TransE {gat['heldout_auc_transe']:.3f}, GAT {gat['heldout_auc_gat']:.3f}")
    print(f"saved to {args.out}")
    return 0
