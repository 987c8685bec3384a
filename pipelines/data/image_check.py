"""Check, before any training step, that every image a manifest lists decodes.

A corrupt file would otherwise surface only when a batch first reads it, possibly after hours of
training (a test-split image is first read after the last step). :func:`verify_images` decodes each
listed image once, in a thread pool (Pillow releases the GIL while it decompresses), and remembers the
images that decoded in a side-car beside the manifest, ``<manifest stem>.images.json``::

    {"format": "motor-image-check", "version": 1,
     "images": {"images/syn000001.png": {"bytes": 20731, "mtime_ns": 1764770000123456789}, ...}}

keyed by the image path as the manifest writes it. An image whose size and modification time still
match its entry is not decoded again, so a re-run costs one ``stat`` per image; any change to the file
makes it be decoded again. Only images that decoded are recorded. The side-car is a cache: it is
written atomically, ignored when unreadable, and a manifest directory that cannot be written to only
costs the next run the decoding again (with a warning).
"""
from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from kg.atomic import write_json_atomic
from kg.errors import InputError
from kg.manifest import SPLITS, read_manifest, read_vqa_manifest

SIDECAR_SUFFIX = ".images.json"
SIDECAR_FORMAT = "motor-image-check"
SIDECAR_VERSION = 1
#: Bad images named in the error beyond the first one.
_MORE_NAMED = 3


@dataclass
class ImageCheck:
    """What :func:`verify_images` did.

    Attributes:
        manifest: the manifest checked.
        images: distinct image files listed in the checked splits.
        decoded: images decoded by this call.
        cached: images known to decode from the side-car (same size and modification time).
        missing: absent image files passed over (``missing="skip"``).
        seconds: wall-clock time of the check.
    """

    manifest: Path
    images: int
    decoded: int
    cached: int
    missing: int
    seconds: float

    def summary(self) -> str:
        """One line for the user, e.g. ``images: 600 decode (580 cached, 20 decoded in 0.4 s)``."""
        line = (f"images: {self.images - self.missing} decode "
                f"({self.cached} cached, {self.decoded} decoded in {self.seconds:.1f} s)")
        return line + (f"; {self.missing} missing, skipped" if self.missing else "")


@dataclass(frozen=True)
class _Listed:
    """An image file as the manifest lists it: its first record names it in errors."""

    key: str
    path: Path
    record: str
    split: str


def sidecar_path(manifest: str | os.PathLike) -> Path:
    """The image-check side-car of a manifest: ``manifest.jsonl`` → ``manifest.images.json``."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + SIDECAR_SUFFIX)


def decode_image(path: Path) -> None:
    """Decode ``path`` completely; raise whatever Pillow raises when it cannot.

    ``Image.verify`` checks the PNG chunk checksums but not that the pixel data is complete, so the
    pixels are loaded too (a truncated file fails only then).
    """
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        image.load()


def _why_not(path: Path) -> str | None:
    """``None`` when ``path`` decodes, else the reason on one line."""
    try:
        decode_image(path)
    # Pillow reports corrupt data as OSError, SyntaxError, ValueError, struct.error, zlib.error, ...
    except Exception as err:  # noqa: BLE001 - any failure means the image does not decode
        text = " ".join(str(err).split())
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return None


def _listed_images(manifest: Path, splits: Iterable[str]) -> tuple[list[_Listed], set[str]]:
    """Images of the ``splits`` (each once, in manifest order) and every image key of the manifest."""
    root = manifest.resolve().parent
    wanted = set(splits)
    rows: list[tuple[str, str, str]] = []  # (image key, record, split)
    if _is_vqa_manifest(manifest):
        for question in read_vqa_manifest(manifest):
            rows.append((question.image, f"question {question.qid}", question.split))
    else:
        for study in read_manifest(manifest):
            rows.extend((image, f"study {study.study_id}", study.split) for image in study.images)
    listed: dict[str, _Listed] = {}
    for key, record, split in rows:
        if split in wanted and key not in listed:
            listed[key] = _Listed(key, root / key, record, split)
    return list(listed.values()), {key for key, _, _ in rows}


def _is_vqa_manifest(manifest: Path) -> bool:
    """Whether the manifest's first record is a VQA question (it has a ``qid``)."""
    if not manifest.is_file():
        raise InputError("manifest not found", file=manifest)
    with manifest.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False  # read_manifest reports it with its line number
                return isinstance(first, dict) and "qid" in first
    return False


def _read_sidecar(path: Path) -> dict[str, dict[str, int]]:
    """The side-car's image entries; an absent, unreadable or foreign side-car is an empty cache."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT or data.get("version") != SIDECAR_VERSION:
        return {}
    images = data.get("images")
    if not isinstance(images, dict):
        return {}
    return {key: entry for key, entry in images.items() if isinstance(entry, dict)}


def _file_key(stat: os.stat_result) -> dict[str, int]:
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def verify_images(
    manifest: str | os.PathLike,
    splits: Iterable[str] = SPLITS,
    *,
    missing: str = "error",
    workers: int | None = None,
) -> ImageCheck:
    """Check that every image of the ``splits`` of a study or VQA manifest decodes.

    Args:
        manifest: a study manifest or a VQA manifest (told apart by a ``qid`` in the first record).
        splits: the splits whose images are checked (default: all three).
        missing: ``"error"``: an absent image file fails the check; ``"skip"``: it is passed over,
            as the datasets skip it.
        workers: decoding threads (default: the CPU count, at most 16).

    Returns:
        An :class:`ImageCheck` with the counts.

    Raises:
        InputError: an image is absent (``missing="error"``) or does not decode. The one-line message
            names the manifest, the first bad image's record (study or question), the image file, its
            split and Pillow's reason, then how many more images fail (the first few named).
    """
    started = time.perf_counter()
    manifest = Path(manifest)
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    listed, all_keys = _listed_images(manifest, splits)
    sidecar = sidecar_path(manifest)
    cache = _read_sidecar(sidecar)
    known = {key: entry for key, entry in cache.items() if key in all_keys}

    failures: dict[str, str] = {}
    to_decode: list[tuple[_Listed, dict[str, int]]] = []
    absent = cached = 0
    for image in listed:
        try:
            stat = image.path.stat()
        except OSError:
            known.pop(image.key, None)
            if missing == "error":
                failures[image.key] = "file not found"
            else:
                absent += 1
            continue
        if known.get(image.key) == _file_key(stat):
            cached += 1
        else:
            known.pop(image.key, None)
            to_decode.append((image, _file_key(stat)))

    if to_decode:
        threads = max(1, min(workers or os.cpu_count() or 1, 16, len(to_decode)))
        with ThreadPoolExecutor(max_workers=threads) as pool:
            reasons = list(pool.map(_why_not, [image.path for image, _ in to_decode]))
        for (image, key), reason in zip(to_decode, reasons):
            if reason is None:
                known[image.key] = key
            else:
                failures[image.key] = reason

    if known != cache:
        _write_sidecar(sidecar, known)
    if failures:
        raise _failure_error(manifest, [image for image in listed if image.key in failures], failures)
    return ImageCheck(manifest=manifest, images=len(listed), decoded=len(to_decode), cached=cached,
                      missing=absent, seconds=time.perf_counter() - started)


def _write_sidecar(path: Path, images: dict[str, Any]) -> None:
    data = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "images": dict(sorted(images.items()))}
    try:
        write_json_atomic(path, data, indent=1)
    except OSError as err:
        warnings.warn(f"{path}: cannot write the image-check cache ({err}); the next run decodes the images again",
                      stacklevel=3)


def _failure_error(manifest: Path, bad: list[_Listed], reasons: dict[str, str]) -> InputError:
    """One-line error naming the first bad image (manifest order) and counting the others."""
    first = bad[0]
    verb = "is missing" if reasons[first.key] == "file not found" else "does not decode"
    message = f"image {first.path} ({first.split} split) {verb}: {reasons[first.key]}"
    others = bad[1:]
    if others:
        named = ", ".join(f"{image.key} ({image.record}, {image.split})" for image in others[:_MORE_NAMED])
        more = f", and {len(others) - _MORE_NAMED} more" if len(others) > _MORE_NAMED else ""
        message += f"; {len(others)} more bad image(s): {named}{more}"
    return InputError(message, file=manifest, record=first.record, field="image")
