"""``motor build-dataset chestxray14 | vqa-rad | slake``: the diagnosis and VQA datasets."""
from __future__ import annotations

import argparse


def register_datasets(datasets: argparse._SubParsersAction) -> None:
    """Add the ``chestxray14``, ``vqa-rad`` and ``slake`` variants to ``build-dataset``."""
    cxr = datasets.add_parser("chestxray14", help="ChestX-ray14: Data_Entry_2017.csv + split lists + PNGs")
    cxr.add_argument("--root", required=True, metavar="DIR",
                     help="directory holding Data_Entry_2017.csv, train_val_list.txt and test_list.txt")
    cxr.add_argument("--out", required=True, metavar="DIR", help="output directory")
    cxr.add_argument("--images-root", metavar="DIR", help="where the PNGs are, searched recursively (default: --root)")
    cxr.add_argument("--data-entry", metavar="CSV", help="the label CSV (default: Data_Entry_2017[_v2020].csv in --root)")
    cxr.add_argument("--train-val-list", metavar="FILE", help="default: train_val_list.txt in --root")
    cxr.add_argument("--test-list", metavar="FILE", help="default: test_list.txt in --root")
    cxr.add_argument("--val-fraction", type=float, default=0.1,
                     help="share of the train/val patients put in val (default: 0.1)")
    cxr.add_argument("--seed", type=int, default=0, help="seed of the train / val cut (default: 0)")
    cxr.set_defaults(func=run)

    rad = datasets.add_parser("vqa-rad", help="VQA-RAD: the public JSON, or MEVF's trainset.json / testset.json")
    rad.add_argument("--root", required=True, metavar="DIR",
                     help="directory holding 'VQA_RAD Dataset Public.json' or trainset.json + testset.json")
    rad.add_argument("--out", required=True, metavar="DIR", help="output directory")
    rad.add_argument("--layout", choices=("auto", "public", "split"), default="auto",
                     help="public release or split files (default: split files when trainset.json exists)")
    rad.add_argument("--images-root", metavar="DIR",
                     help="image folder (default: 'VQA_RAD Image Folder' or images/ under --root)")
    rad.set_defaults(func=run)

    slake = datasets.add_parser("slake", help="SLAKE: train.json / validate.json / test.json + imgs/")
    slake.add_argument("--root", required=True, metavar="DIR", help="the Slake1.0 directory")
    slake.add_argument("--out", required=True, metavar="DIR", help="output directory")
    slake.add_argument("--images-root", metavar="DIR", help="image folder (default: imgs/ under --root)")
    slake.add_argument("--language", default="en", help="questions kept by q_lang (default: en)")
    slake.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the dataset, write its files and print what was kept and removed."""
    if args.dataset == "chestxray14":
        from pipelines.builders.chestxray14 import build_chestxray14, write_chestxray14

        build = build_chestxray14(args.root, images_root=args.images_root, data_entry=args.data_entry,
                                  train_val_list=args.train_val_list, test_list=args.test_list,
                                  val_fraction=args.val_fraction, seed=args.seed)
        paths = write_chestxray14(build, args.out)
        unit = "images"
    else:
        from pipelines.builders.vqa_common import write_vqa_dataset

        if args.dataset == "vqa-rad":
            from pipelines.builders.vqa_rad import build_vqa_rad

            build = build_vqa_rad(args.root, layout=args.layout, images_root=args.images_root)
        else:
            from pipelines.builders.slake import build_slake

            build = build_slake(args.root, images_root=args.images_root, language=args.language)
        paths = write_vqa_dataset(build, args.out)
        unit = "questions"
    kept = ", ".join(f"{split} {n}" for split, n in build.kept.items())
    print(f"{build.dataset}: kept {len(build.records)} {unit} ({kept})")
    for name, count in build.filters.items():
        print(f"  removed {count:>7,}  {name}")
    for name, count in build.notes.items():
        print(f"  note    {count:>7,}  {name}")
    for path in paths.values():
        print(f"wrote {path}")
    return 0
