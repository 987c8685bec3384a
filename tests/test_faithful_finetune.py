"""Finetuning as the MOTOR reference code does it, beside motor-kg's defaults: knowledge paths off at
finetuning, and diagnosis with a label set other than CheXpert's (ChestX-ray14's) end to end."""
from __future__ import annotations

import csv
import json
import random
from dataclasses import replace

import pytest

from kg.manifest import read_manifest, write_manifest
from pipelines.cli import main

TINY = ["--no-progress", "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "eval.batch_size=8",
        "--set", "eval.itm_k=2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pretrain") / "run"
    assert main(["pretrain", "--out", str(run_dir), "--no-progress", "--set", "data.synthetic_n=24",
                 "--set", "model.image_size=32", "--set", "model.knowledge=gk+sk", "--set", "train.max_steps=2",
                 "--set", "train.batch_size=4", "--set", "eval.batch_size=8"]) == 0
    return run_dir


@pytest.mark.timeout(180)
def test_knowledge_at_finetune_false_finetunes_plain_blip_and_says_so(pretrained, tmp_path):
    run_dir = tmp_path / "plain"
    assert main(["finetune", "--task", "retrieval", "--from", str(pretrained), "--out", str(run_dir), *TINY,
                 "--set", "knowledge_at_finetune=false"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["knowledge"] == {"pretrained": "gk+sk", "finetuned": "none", "knowledge_at_finetune": False}
    assert "Knowledge paths at finetuning: dropped" in (run_dir / "metrics.md").read_text()
    saved = json.loads((run_dir / "model" / "config.json").read_text())
    assert saved["motor_config"]["knowledge"] == "none"
    assert "knowledge_at_finetune: false" in (run_dir / "config.yaml").read_text()

    kept = tmp_path / "kept"
    assert main(["finetune", "--task", "retrieval", "--from", str(pretrained), "--out", str(kept), *TINY]) == 0
    assert json.loads((kept / "metrics.json").read_text())["knowledge"]["finetuned"] == "gk+sk"


def chestxray14_like(pretrained, directory):
    """The pretraining studies with ChestX-ray14's 15 labels beside them, as the builder writes them."""
    from pipelines.builders.chestxray14 import read_label_set

    source = pretrained / "data" / "manifest.jsonl"
    records = [replace(r, image=[str((source.parent / i).resolve()) for i in r.images], report="",
                       labels=[None] * len(r.labels)) for r in read_manifest(source)]
    directory.mkdir()
    write_manifest(records, directory / "manifest.jsonl")
    names = read_label_set().names
    rng = random.Random(0)
    with (directory / "labels_chestxray14.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_id", *names])
        for record in records:
            writer.writerow([record.study_id, *(rng.choice("01") for _ in names)])
    return directory / "manifest.jsonl", names


@pytest.mark.timeout(180)
def test_diagnosis_trains_and_reports_the_datasets_own_label_set(pretrained, tmp_path):
    manifest, names = chestxray14_like(pretrained, tmp_path / "cxr14")
    assert len(names) == 15 and "Infiltration" in names
    run_dir = tmp_path / "diagnosis"
    assert main(["finetune", "--task", "diagnosis", "--from", str(pretrained), "--data", str(manifest),
                 "--out", str(run_dir), *TINY]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["test"]["auroc"]) == names and list(metrics["test"]["f1"]) == names
    table = (run_dir / "metrics.md").read_text()
    assert all(name in table for name in names)
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["data"]["label_set"]["name"] == "chestxray14"
    assert run_info["data"]["label_set"]["classes"] == names

    # `motor evaluate` finds the same label set beside the manifest and reproduces the figures.
    out = tmp_path / "evaluated"
    assert main(["evaluate", "--task", "diagnosis", "--model", str(run_dir), "--data", str(manifest),
                 "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["test"]["auroc"] == metrics["test"]["auroc"]


def test_a_label_file_with_another_header_is_refused_naming_file_and_line(tmp_path):
    from kg.errors import InputError
    from pipelines.tasks.label_sets import dataset_label_set

    (tmp_path / "manifest.jsonl").write_text("")
    (tmp_path / "labels_chestxray14.csv").write_text("study_id,Atelectasis\ns1,1\n")
    with pytest.raises(InputError, match="labels_chestxray14.csv.*line 1"):
        dataset_label_set(tmp_path / "manifest.jsonl")
    assert dataset_label_set(tmp_path / "elsewhere" / "manifest.jsonl") is None


@pytest.mark.timeout(180)
def test_question_type_vqa_head_trains_saves_and_evaluates(pretrained, tmp_path):
    run_dir = tmp_path / "vqa"
    assert main(["finetune", "--task", "vqa", "--from", str(pretrained), "--out", str(run_dir), *TINY,
                 "--set", "vqa_head=question_type"]) == 0
    answers = json.loads((run_dir / "answers.json").read_text())
    assert set(answers) == {"closed", "open"} and answers["closed"] and answers["open"]
    assert "yes" in answers["closed"] or "no" in answers["closed"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(set(row) >= {"type", "closed", "open"} for row in logged)
    assert "question-type classifier" in (run_dir / "metrics.md").read_text()
    out = tmp_path / "evaluated"
    assert main(["evaluate", "--task", "vqa", "--model", str(run_dir), "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["test"]["model"] == metrics["test"]["model"]


def test_question_type_head_answers_from_the_predicted_types_classifier(tmp_path):
    import torch
    from model_cases import make_batch, tiny_config, train_tiny_tokenizer

    from model import build_model
    from model.heads import QuestionTypeVQAHead

    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    motor = build_model(tiny_config("none"), tokenizer).eval()
    head = QuestionTypeVQAHead(motor, num_closed=2, num_open=3).eval()
    batch = make_batch(tokenizer, motor.config)
    with torch.no_grad():
        kind, closed, opened = head.parts(batch["image"], batch["input_ids"], batch["attention_mask"])
        predicted = head.logits(batch["image"], batch["input_ids"], batch["attention_mask"]).argmax(-1)
    for b in range(predicted.shape[0]):
        if int(kind[b].argmax()) == 1:
            assert int(predicted[b]) == 2 + int(opened[b].argmax())
        else:
            assert int(predicted[b]) == int(closed[b].argmax())
    batch["answer_type"] = torch.tensor([0, 1, 0, 0])
    batch["answer"] = torch.tensor([1, 4, -100, 0])
    output = head(batch)
    expected_open = torch.nn.functional.cross_entropy(opened[[1]], torch.tensor([2]))
    torch.testing.assert_close(output.losses["open"].detach(), expected_open, atol=1e-5, rtol=1e-5)
    expected_closed = torch.nn.functional.cross_entropy(closed[[0, 3]], torch.tensor([1, 0]))
    torch.testing.assert_close(output.losses["closed"].detach(), expected_closed, atol=1e-5, rtol=1e-5)


def test_all_views_encodes_each_view_and_projects_their_concatenation(tmp_path):
    import torch
    from model_cases import tiny_config, train_tiny_tokenizer

    from kg.errors import InputError
    from model import build_model

    model = build_model(tiny_config("none", views="all", num_views=2), train_tiny_tokenizer(tmp_path / "tok")).eval()
    encoder = model.image_encoder
    images = torch.randn(3, 2, 3, 64, 64)
    with torch.no_grad():
        front, side = encoder.vit.forward_features(images[:, 0]), encoder.vit.forward_features(images[:, 1])
        expected = encoder.view_proj(torch.cat([front, side], dim=-1))
        torch.testing.assert_close(encoder(images), expected, atol=1e-5, rtol=1e-5)
        assert model.encode_image(images).shape == (3, model.config.embed_dim)
    with pytest.raises(InputError, match="views: all expects"):
        encoder(images[:, 0])


def test_a_study_dataset_with_views_gives_each_study_its_views(tmp_path):
    from PIL import Image

    from kg.manifest import ManifestRecord
    from pipelines.data.datasets import ImageReportDataset

    for name, shade in (("a.png", 0), ("b.png", 128), ("c.png", 255)):
        Image.new("L", (16, 16), shade).save(tmp_path / name)
    records = [ManifestRecord("two", ["a.png", "b.png"], "r", [None] * 14, "train"),
               ManifestRecord("one", ["c.png"], "r", [None] * 14, "train"),
               ManifestRecord("three", ["a.png", "b.png", "c.png"], "r", [None] * 14, "train")]
    write_manifest(records, tmp_path / "manifest.jsonl")
    dataset = ImageReportDataset(tmp_path / "manifest.jsonl", "train", image_size=8, views_per_item=2)
    assert len(dataset) == 3 and all(dataset[i]["image"].shape == (2, 1, 8, 8) for i in range(3))
    assert dataset[0]["image"][0].max() == 0 and dataset[0]["image"][1].min() > 0.4  # a, then b
    assert (dataset[1]["image"] == 1).all()  # the one view, repeated
    assert dataset[2]["image"][1].max() < 0.6  # the first two of three views


@pytest.mark.timeout(240)
def test_views_all_pretrains_and_finetunes_generation_on_two_view_studies(pretrained, tmp_path):
    source = pretrained / "data" / "manifest.jsonl"
    records = list(read_manifest(source))
    paths = [str((source.parent / r.images[0]).resolve()) for r in records]
    two_views = [replace(r, image=[paths[i], paths[(i + 1) % len(paths)]]) for i, r in enumerate(records)]
    (tmp_path / "iu").mkdir()
    write_manifest(two_views, tmp_path / "iu" / "manifest.jsonl")
    run_dir = tmp_path / "pretrain"
    assert main(["pretrain", "--out", str(run_dir), "--no-progress", "--data", str(tmp_path / "iu" / "manifest.jsonl"),
                 "--set", "model.image_size=32", "--set", "model.knowledge=gk", "--set", "model.views=all",
                 "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "eval.batch_size=8"]) == 0
    finetuned = tmp_path / "generation"
    assert main(["finetune", "--task", "generation", "--from", str(run_dir), "--out", str(finetuned), *TINY,
                 "--set", "eval.max_length=6", "--set", "eval.num_beams=1", "--set", "eval.meteor=nltk"]) == 0
    saved = json.loads((finetuned / "model" / "config.json").read_text())["motor_config"]
    assert (saved["views"], saved["num_views"]) == ("all", 2)
    assert json.loads((finetuned / "metrics.json").read_text())["test"]["greedy"]["BLEU-1"] >= 0
