"""``motor build-dataset``: MIMIC-CXR or IU-Xray from the user's own copy → annotation.json + manifest;
ChestX-ray14, VQA-RAD and SLAKE (:mod:`pipelines.commands.build_dataset_more`)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Build the files training code reads from a dataset as its publisher ships it:

  OUT/annotation.json   R2Gen's split file (train / val / test lists of id, report, image_path, ...)
  OUT/manifest.jsonl    the motor manifest (one study per line, image paths relative to OUT)
  OUT/build_log.json    inputs, options, and every filter with the studies it removed

examples:
  motor build-dataset mimic-cxr --root mimic-cxr-reports --images-root mimic-cxr-jpg/2.0.0 --out data/mimic
  motor build-dataset iu-xray --reports indiana_reports.csv --projections indiana_projections.csv \\
      --images-root images/images_normalized --out data/iu
  motor build-dataset iu-xray --annotation iu_xray/annotation.json --images-root iu_xray/images --out data/iu

ChestX-ray14 writes OUT/manifest.jsonl, OUT/labels_chestxray14.csv (15 classes) and OUT/build_log.json;
VQA-RAD and SLAKE write OUT/vqa.jsonl (the VQA manifest) and OUT/build_log.json:
  motor build-dataset chestxray14 --root ChestX-ray14 --images-root ChestX-ray14/images --out data/cxr14
  motor build-dataset vqa-rad --root data_RAD --out data/vqa_rad        # trainset.json / testset.json + images/
  motor build-dataset vqa-rad --root VQA_RAD --layout public --out data/vqa_rad
  motor build-dataset slake --root Slake1.0 --out data/slake
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build-dataset`` sub-command with its ``mimic-cxr`` and ``iu-xray`` variants."""
    parser = subparsers.add_parser(
        "build-dataset",
        help="build manifests from your MIMIC-CXR, IU-Xray, ChestX-ray14, VQA-RAD or SLAKE copy",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    mimic = datasets.add_parser("mimic-cxr", help="MIMIC-CXR report tree + split / metadata / CheXpert CSVs")
    mimic.add_argument("--root", required=True, metavar="DIR",
                       help="directory holding the report tree files/pXX/pXXXXXXXX/sXXXXXXXX.txt")
    mimic.add_argument("--out", required=True, metavar="DIR", help="output directory")
    mimic.add_argument("--images-root", metavar="DIR",
                       help="MIMIC-CXR-JPG root holding files/pXX/.../*.jpg (default: --root)")
    mimic.add_argument("--split-csv", metavar="FILE",
                       help="mimic-cxr-2.0.0-split.csv[.gz] (default: found in --root or --images-root)")
    mimic.add_argument("--metadata-csv", metavar="FILE", help="mimic-cxr-2.0.0-metadata.csv[.gz] (default: found)")
    mimic.add_argument("--chexpert-csv", metavar="FILE",
                       help="mimic-cxr-2.0.0-chexpert.csv[.gz] (default: found; without it labels are null)")
    mimic.add_argument("--check-images", action="store_true", help="drop studies whose chosen JPG is not on disk")
    mimic.set_defaults(func=run)

    iu = datasets.add_parser("iu-xray", help="IU-Xray Kaggle CSVs, or an existing R2Gen annotation.json")
    iu.add_argument("--images-root", required=True, metavar="DIR", help="directory the image names are relative to")
    iu.add_argument("--out", required=True, metavar="DIR", help="output directory")
    iu.add_argument("--reports", metavar="CSV", help="indiana_reports.csv")
    iu.add_argument("--projections", metavar="CSV", help="indiana_projections.csv")
    iu.add_argument("--annotation", metavar="FILE", help="an R2Gen annotation.json (instead of the CSVs)")
    iu.add_argument("--seed", type=int, default=0, help="seed of the 7:1:2 split of the CSV source (default: 0)")
    iu.set_defaults(func=run)

    from pipelines.commands.build_dataset_more import register_datasets

    register_datasets(datasets)


def run(args: argparse.Namespace) -> int:
    """Build the dataset, write the three files and print the filter counts."""
    from pipelines.builders import build_iu_xray, build_mimic_cxr, write_dataset

    if args.dataset == "mimic-cxr":
        build = build_mimic_cxr(args.root, images_root=args.images_root, split_csv=args.split_csv,
                                metadata_csv=args.metadata_csv, chexpert_csv=args.chexpert_csv,
                                check_images=args.check_images)
    else:
        build = build_iu_xray(args.images_root, reports_csv=args.reports, projections_csv=args.projections,
                              annotation=args.annotation, seed=args.seed)
    paths = write_dataset(build, args.out)
    kept = ", ".join(f"{split} {n}" for split, n in build.kept.items())
    print(f"{build.dataset}: kept {len(build.records)} studies ({kept})")
    for name, count in build.filters.items():
        print(f"  removed {count:>7,}  {name}")
    for name, path in paths.items():
        print(f"wrote {path}")
    return 0
