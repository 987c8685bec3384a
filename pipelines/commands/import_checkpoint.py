"""``motor import-checkpoint``: a BLIP- or MOTOR-style PyTorch checkpoint → a saved model (safetensors)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Load a BLIP- or MOTOR-style checkpoint (torch.save of a state dict, possibly wrapped in
{"model": ...}, read with weights_only=True; or a .safetensors file) into this project's model by
the name mapping of model/convert.py (RULES), and save it as OUT/config.json + model.safetensors +
tokenizer files, with OUT/conversion.json listing mapped, missing, unexpected, mismatched and
dropped keys.

examples:
  motor import-checkpoint model_base.pth --preset base --tokenizer bert-base-uncased/ --out models/blip_base
  motor import-checkpoint motor.pth --preset base --config my_model.yaml --out models/motor --strict
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-checkpoint`` sub-command."""
    parser = subparsers.add_parser(
        "import-checkpoint",
        help="import a BLIP/MOTOR PyTorch checkpoint as a saved model (safetensors)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="checkpoint file (.pth, .pt, .bin or .safetensors)")
    parser.add_argument("--preset", default="base", help="model preset, tiny or base (default: base)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML of MotorConfig fields overriding the preset (e.g. knowledge, image_size)")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="tokenizer matching the checkpoint's vocabulary: tokenizer.json or a BERT vocab.txt "
                             "(default: the one beside SRC)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to save the converted model to")
    parser.add_argument("--strict", action="store_true",
                        help="fail, writing nothing, when any key is missing, unexpected or mismatched")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert, save and print the report."""
    from pathlib import Path

    import yaml

    from kg.errors import InputError
    from model.config import MotorConfig
    from model.convert import convert_checkpoint

    config = MotorConfig.preset(args.preset)
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise InputError("model config file not found", file=path)
        try:
            overrides = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise InputError(f"not valid YAML: {err}", file=path) from None
        if not isinstance(overrides, dict):
            raise InputError("expected a mapping of MotorConfig fields", file=path)
        config = MotorConfig.from_dict({**config.to_dict(), **overrides}, source=path)
    report = convert_checkpoint(args.src, config, args.out, args.tokenizer, strict=args.strict)
    print(report.summary())
    print(f"wrote {report.out_dir}")
    return 0
