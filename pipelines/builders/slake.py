"""SLAKE from the user's own copy → ``vqa.jsonl`` + ``build_log.json``.

The release (``Slake1.0/``) holds ``train.json``, ``validate.json`` and ``test.json`` (lists of
questions with ``qid``, ``img_id``, ``img_name``, ``question``, ``answer``, ``answer_type``,
``q_lang``, ...) and ``imgs/`` (``img_name`` is relative to it, e.g. ``xmlab102/source.jpg``).
MOTOR, ARL and M3AE use these official splits and the English questions only; so does this
builder by default (``language="en"``; questions in other languages are counted in the log's
notes as ``other_language``). ``validate.json`` becomes the ``val`` split.

Records are read by :func:`pipelines.data.adapters.from_slake`: answers stripped and lower-cased,
``study_id`` ``slake<img_id>``. Filters (:mod:`pipelines.builders.vqa_common`):
``invalid_record`` and ``image_missing``.
"""
from __future__ import annotations

import os
from pathlib import Path

from kg.errors import InputError
from pipelines.builders.vqa_common import VQABuild
from pipelines.data.adapters import from_slake

SPLIT_FILES = {"train": "train.json", "val": "validate.json", "test": "test.json"}
IMAGES = "imgs"


def build_slake(
    root: str | os.PathLike,
    *,
    images_root: str | os.PathLike | None = None,
    language: str = "en",
) -> VQABuild:
    """Build SLAKE's VQA manifest records (rules in the module docstring).

    Args:
        root: the release directory (``Slake1.0``).
        images_root: the image folder (default: ``root/imgs``).
        language: the ``q_lang`` kept (``en`` or ``zh``).

    Raises:
        InputError: ``train.json`` or ``test.json`` missing, a file that is not a JSON list, or a
            question id in two files.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a directory", file=root)
    images = Path(images_root) if images_root is not None else root / IMAGES
    if not images.is_dir():
        raise InputError("image folder not found; pass --images-root", file=images, field="images_root")
    for required in ("train", "test"):
        if not (root / SPLIT_FILES[required]).is_file():
            raise InputError("file not found", file=root / SPLIT_FILES[required])
    build = VQABuild("slake", inputs={"root": str(root), "images_root": str(images)}, options={"language": language})
    for split, name in SPLIT_FILES.items():
        source = root / name
        if source.is_file():
            build.inputs[name] = str(source)
            build.add(from_slake(source, images, split=split, language=language, missing="skip", skip_invalid=True),
                      source=source)
    return build
