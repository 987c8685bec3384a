"""Image verification before training: every image of every split decodes, results cached beside the
manifest by file size and modification time, bad images named with manifest, record and split."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kg.errors import InputError
from pipelines.data import image_check
from pipelines.data.image_check import sidecar_path, verify_images
from kg.manifest import ManifestRecord, VQARecord, write_manifest, write_vqa_manifest

SPLIT_OF = {"s0": "train", "s1": "train", "s2": "train", "s3": "val", "s4": "test", "s5": "test"}


def save_png(path: Path, seed: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)).save(path)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """Six studies over the three splits; study s2 has two views."""
    records = []
    for i, (study_id, split) in enumerate(SPLIT_OF.items()):
        images = [f"images/{study_id}.png"] + ([f"images/{study_id}_lateral.png"] if study_id == "s2" else [])
        for j, image in enumerate(images):
            save_png(tmp_path / image, seed=10 * i + j)
        records.append(ManifestRecord(study_id, images if len(images) > 1 else images[0], "FINDINGS: Clear.",
                                      [None] * 14, split))
    path = tmp_path / "manifest.jsonl"
    write_manifest(records, path)
    return path


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths :func:`image_check.decode_image` is called with, in call order."""
    calls: list[Path] = []
    real = image_check.decode_image

    def counting(path: Path) -> None:
        calls.append(path)  # list.append is atomic: safe from the pool's threads
        real(path)

    monkeypatch.setattr(image_check, "decode_image", counting)
    return calls


def test_every_image_is_decoded_once_then_the_cache_answers(manifest, decoded):
    first = verify_images(manifest)
    assert (first.images, first.decoded, first.cached, first.missing) == (7, 7, 0, 0)
    assert sorted(p.name for p in decoded) == sorted(p.name for p in (manifest.parent / "images").iterdir())
    sidecar = json.loads(sidecar_path(manifest).read_text())
    assert sidecar_path(manifest).name == "manifest.images.json"
    assert (sidecar["format"], sidecar["version"]) == ("motor-image-check", 1)
    stat = (manifest.parent / "images" / "s4.png").stat()
    assert sidecar["images"]["images/s4.png"] == {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    decoded.clear()
    again = verify_images(manifest)
    assert decoded == []
    assert (again.decoded, again.cached) == (0, 7)
    assert "7 cached" in again.summary()


def test_a_file_whose_size_or_mtime_changed_is_decoded_again(manifest, decoded):
    verify_images(manifest)
    decoded.clear()
    resized = manifest.parent / "images" / "s1.png"
    save_png(resized, seed=99, size=20)  # new content, new size
    touched = manifest.parent / "images" / "s3.png"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same bytes, new mtime
    check = verify_images(manifest)
    assert sorted(decoded) == sorted([resized.resolve(), touched.resolve()])
    assert (check.decoded, check.cached) == (2, 5)
    # A file corrupted in place is caught although it was fine before.
    truncate(resized)
    with pytest.raises(InputError, match="s1.png"):
        verify_images(manifest)


def test_a_corrupt_test_image_is_named_with_manifest_record_and_split(manifest, decoded):
    bad = manifest.parent / "images" / "s5.png"
    truncate(bad)
    with pytest.raises(InputError) as caught:
        verify_images(manifest)
    err = caught.value
    assert err.file == str(manifest) and err.record == "study s5" and err.field == "image"
    message = str(err)
    assert "\n" not in message
    assert str(bad.resolve()) in message and "(test split) does not decode" in message
    # The good images are remembered; the bad one is not, so it is decoded again next time.
    cached = json.loads(sidecar_path(manifest).read_text())["images"]
    assert "images/s5.png" not in cached and len(cached) == 6
    decoded.clear()
    with pytest.raises(InputError):
        verify_images(manifest)
    assert [p.name for p in decoded] == ["s5.png"]
    # Only the splits asked for are checked.
    assert verify_images(manifest, splits=("train", "val")).images == 5


def test_every_bad_image_is_counted_and_the_first_few_named(manifest):
    for name in ("s0.png", "s2_lateral.png", "s3.png"):
        (manifest.parent / "images" / name).write_bytes(b"not an image")
    (manifest.parent / "images" / "s4.png").write_bytes(b"")
    with pytest.raises(InputError) as caught:
        verify_images(manifest)
    message = str(caught.value)
    assert caught.value.record == "study s0"
    assert "3 more bad image(s): images/s2_lateral.png (study s2, train), images/s3.png (study s3, val), " \
           "images/s4.png (study s4, test)" in message


def test_a_missing_image_fails_or_is_skipped_as_the_datasets_do(manifest):
    (manifest.parent / "images" / "s3.png").unlink()
    with pytest.raises(InputError, match=r"record study s3: field 'image': image .*s3.png \(val split\) is missing"):
        verify_images(manifest)
    check = verify_images(manifest, missing="skip")
    assert (check.images, check.missing) == (7, 1)
    assert "1 missing, skipped" in check.summary()


def test_a_vqa_manifest_decodes_each_shared_image_once(tmp_path, decoded):
    save_png(tmp_path / "img" / "a.png", seed=1)
    save_png(tmp_path / "img" / "b.png", seed=2)
    questions = [VQARecord(f"q{i}", "s", f"img/{'ab'[i % 2]}.png", "Is there an effusion?", "yes", "closed",
                           "train" if i < 4 else "test") for i in range(6)]
    path = tmp_path / "vqa.jsonl"
    write_vqa_manifest(questions, path)
    assert verify_images(path).images == 2
    assert sorted(p.name for p in decoded) == ["a.png", "b.png"]
    assert sidecar_path(path).name == "vqa.images.json"
    truncate(tmp_path / "img" / "b.png")
    with pytest.raises(InputError, match="record question q1: field 'image'"):
        verify_images(path)


def test_an_unreadable_sidecar_is_an_empty_cache_and_an_unwritable_one_a_warning(manifest, decoded, monkeypatch):
    sidecar_path(manifest).write_text("{not json")
    assert verify_images(manifest).decoded == 7
    decoded.clear()
    sidecar_path(manifest).unlink()

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(image_check, "write_json_atomic", read_only)
    with pytest.warns(UserWarning, match="cannot write the image-check cache"):
        assert verify_images(manifest).decoded == 7
    assert not sidecar_path(manifest).exists()


def test_pretraining_reports_a_corrupt_test_image_before_any_training_step(manifest, tmp_path, monkeypatch, capsys):
    import pipelines.pretrain
    from pipelines.cli import main

    def no_training(*args, **kwargs):
        raise AssertionError("training started although an image does not decode")

    monkeypatch.setattr(pipelines.pretrain, "fit", no_training)
    truncate(manifest.parent / "images" / "s4.png")
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(manifest), "--out", str(out), "--no-progress"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"motor pretrain: error: {manifest}: record study s4: field 'image': image ")
    assert "s4.png (test split) does not decode" in error and "\n" not in error
    assert not (out / "tokenizer").exists() and not (out / "checkpoints").exists()
