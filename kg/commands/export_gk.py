"""``kg export-gk``: write the general-knowledge graph as tensors, GraphML or JSON."""
from __future__ import annotations

import argparse

from kg.gk_export import EXPORT_FORMATS

DESCRIPTION = """\
Write the GK graph (default: the shipped 28-node chest graph) in one format:

  pt       torch.save of {visible_mask, node_type_ids, edge_index} plus PATH's side-car
           <stem>.nodes.json (node ids, words, types); load the tensors with
           torch.load(PATH, weights_only=True) or kg.gk_export.load_gk_tensors(PATH)
  graphml  networkx GraphML (node attributes: index, type, organ, words, synonyms)
  json     nodes and undirected edges by id
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export-gk`` sub-command."""
    parser = subparsers.add_parser(
        "export-gk",
        help="write the GK graph as tensors (.pt), GraphML or JSON",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="output format")
    parser.add_argument("--graph", metavar="FILE", help="GK definition YAML (default: the shipped chest graph)")
    parser.add_argument("--out", required=True, metavar="PATH", help="file to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the graph and write it."""
    from kg.gk import load_gk
    from kg.gk_export import export_gk

    for path in export_gk(load_gk(args.graph), args.format, args.out):
        print(f"wrote {path}")
    return 0
