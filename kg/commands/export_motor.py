"""``kg export-motor``: write the knowledge annotation JSON that MOTOR's reference code reads."""
from __future__ import annotations

import argparse

from kg.motor_json import DEFAULT_MAX_TRIPLETS, UNCERTAIN_POLICIES, MotorStudy
from kg.sk_order import DEFAULT_SK_ORDER, SK_ORDERS

DESCRIPTION = """\
Write MOTOR's knowledge annotation: a JSON list whose element 0 maps train / val / test to
studies {id, image_path, report, triplet, label_index}; build information goes to the side-car
<OUT stem>.meta.json.

Studies (split, images, report, labels) come from a motor manifest or an R2Gen annotation.json;
triplets from STORE (the study's report, in --sk-order: as the report states them by default);
labels from the manifest when it has them, else from the report text (kg.label).

examples:
  kg export-motor mimic.duckdb --annotation mimic/annotation.json --out motor_knowledge.json
  kg export-motor iu.duckdb --manifest iu/manifest.jsonl --out iu_knowledge.json --uncertain ignore
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export-motor`` sub-command."""
    parser = subparsers.add_parser(
        "export-motor",
        help="write MOTOR's knowledge annotation JSON from a store and a manifest / annotation.json",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", metavar="STORE", help="DuckDB knowledge store holding the studies' reports")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--annotation", metavar="FILE", help="R2Gen annotation.json")
    source.add_argument("--manifest", metavar="FILE", help="motor manifest (JSON lines)")
    parser.add_argument("--out", required=True, metavar="FILE", help="annotation file to write")
    parser.add_argument("--max-triplets", type=int, default=DEFAULT_MAX_TRIPLETS,
                        help=f"triplets per study, cut after ordering (default: {DEFAULT_MAX_TRIPLETS})")
    parser.add_argument("--sk-order", choices=SK_ORDERS, default=DEFAULT_SK_ORDER,
                        help="triplet order: as the report states them (report), rarest in the store first "
                             "(specific_first) or most frequent first (frequent_first); the SK sentences of "
                             f"kg lookup and pretraining use the same policy (default: {DEFAULT_SK_ORDER})")
    parser.add_argument("--uncertain", choices=UNCERTAIN_POLICIES, default="negative",
                        help="label_index value of uncertain labels: negative 0, positive 1, ignore -1 "
                             "(default: negative)")
    parser.add_argument("--backend", default="rules", help="kg.label back-end for studies without labels")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the studies, export them and print the counts."""
    from kg.motor_json import export_motor_annotation

    if args.manifest is not None:
        studies, source = _from_manifest(args.manifest), {"kind": "manifest", "path": args.manifest}
    else:
        studies, source = _from_annotation(args.annotation), {"kind": "r2gen-annotation", "path": args.annotation}
    summary = export_motor_annotation(args.store, studies, args.out, max_triplets=args.max_triplets,
                                      uncertain=args.uncertain, source=source, label_backend=args.backend,
                                      sk_order=args.sk_order)
    splits = ", ".join(f"{split} {n}" for split, n in summary.studies.items())
    print(f"wrote {summary.out} ({splits})")
    print(f"wrote {summary.meta}")
    print(f"  studies without knowledge in the store: {summary.without_knowledge}")
    print(f"  labels from the input: {summary.labels_from_input}; from the report text: {summary.labels_from_text}")
    return 0


def _from_manifest(path: str) -> list[MotorStudy]:
    from kg.manifest import read_manifest

    return [MotorStudy(id=r.study_id, image_path=r.images, report=r.report, split=r.split, labels=list(r.labels))
            for r in read_manifest(path)]


def _from_annotation(path: str) -> list[MotorStudy]:
    from kg.r2gen import read_r2gen_annotation

    return [MotorStudy(id=e.id, image_path=e.image_path, report=e.report, split=e.split, knowledge_id=e.study_key)
            for e in read_r2gen_annotation(path)]
