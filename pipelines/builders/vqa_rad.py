"""VQA-RAD from the user's own copy → ``vqa.jsonl`` + ``build_log.json``.

Two layouts are read, chosen by what ``root`` holds (``layout="auto"``) or by name:

* ``public``: the OSF release, ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``.
  Questions whose ``phrase_type`` starts with ``test`` (``test_freeform``, ``test_para``) are the
  test split, the others train; the release has no validation split.
* ``split``: the MEVF split files that MOTOR, ARL and M3AE train on, ``trainset.json`` +
  ``testset.json`` (+ ``valset.json``, as M3AE's copy has) + ``images/``. Entries have the fields
  of the public release (``qid``, ``image_name``, ``question``, ``answer``, ``answer_type``, ...);
  the split is the file's, whatever ``phrase_type`` says. ``auto`` picks this layout when
  ``trainset.json`` is present.

Records are read by :func:`pipelines.data.adapters.from_vqa_rad`: answers stripped and
lower-cased, ``answer_type`` ``CLOSED`` / ``OPEN`` → ``closed`` / ``open``, ``study_id`` the image
name without extension. Filters (:mod:`pipelines.builders.vqa_common`): ``invalid_record`` (a
field missing or of the wrong type) and ``image_missing``.
"""
from __future__ import annotations

import os
from pathlib import Path

from kg.errors import InputError
from pipelines.builders.vqa_common import VQABuild
from pipelines.data.adapters import from_vqa_rad

PUBLIC_JSON = "VQA_RAD Dataset Public.json"
PUBLIC_IMAGES = "VQA_RAD Image Folder"
SPLIT_FILES = {"train": "trainset.json", "val": "valset.json", "test": "testset.json"}
SPLIT_IMAGES = "images"
LAYOUTS = ("auto", "public", "split")


def build_vqa_rad(
    root: str | os.PathLike,
    *,
    layout: str = "auto",
    images_root: str | os.PathLike | None = None,
) -> VQABuild:
    """Build VQA-RAD's VQA manifest records (rules in the module docstring).

    Args:
        root: the directory holding the JSON file(s).
        layout: ``"auto"``, ``"public"`` or ``"split"``.
        images_root: the image folder (default: ``root/VQA_RAD Image Folder`` for the public
            layout, ``root/images`` for the split files).

    Raises:
        InputError: an unknown layout, missing files, a file that is not a JSON list, or a
            question id in two split files.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose {', '.join(LAYOUTS)}", field="layout")
    if not root.is_dir():
        raise InputError("not a directory", file=root)
    if layout == "auto":
        layout = "split" if (root / SPLIT_FILES["train"]).is_file() else "public"
    images = Path(images_root) if images_root is not None else root / (PUBLIC_IMAGES if layout == "public" else SPLIT_IMAGES)
    if not images.is_dir():
        raise InputError("image folder not found; pass --images-root", file=images, field="images_root")
    build = VQABuild("vqa-rad", inputs={"root": str(root), "images_root": str(images)}, options={"layout": layout})
    if layout == "public":
        source = root / PUBLIC_JSON
        build.inputs["questions"] = str(source)
        build.add(from_vqa_rad(source, images, missing="skip", skip_invalid=True), source=source)
        return build
    for required in ("train", "test"):
        if not (root / SPLIT_FILES[required]).is_file():
            raise InputError(f"{SPLIT_FILES[required]} not found beside {SPLIT_FILES['train']}",
                             file=root / SPLIT_FILES[required])
    for split, name in SPLIT_FILES.items():
        source = root / name
        if source.is_file():
            build.inputs[name] = str(source)
            build.add(from_vqa_rad(source, images, missing="skip", skip_invalid=True), split=split, source=source)
    return build
