"""MedViLL as a method of the framework: presets, ``motor pretrain --method medvill`` (and its resume),
the downstream heads, and ``motor finetune`` / ``motor evaluate`` on every task from a MedViLL run."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from model_cases import BATCH, make_samples

from kg.errors import InputError
from model.medvill import MedVillModel
from model.medvill_config import MedVillConfig
from model.processing import MotorCollator
from model.registry import get_method, method_names
from pipelines.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_PRETRAIN = ["--set", "data.synthetic_n=24", "--set", "train.batch_size=4", "--set", "eval.batch_size=8",
                 "--set", "tokenizer.vocab_size=500", "--set", "train.log_every=1"]
TINY_FINETUNE = ["--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "eval.batch_size=8",
                 "--set", "eval.max_length=8", "--set", "eval.num_beams=2", "--set", "eval.meteor=nltk"]


def _model(tokenizer, **changes) -> MedVillModel:
    torch.manual_seed(0)
    config = MedVillConfig.preset("tiny").replace(dropout=0.0, **changes)
    return get_method("medvill").build(config, tokenizer).eval()


def _batch(tokenizer, n: int = BATCH) -> dict:
    return MotorCollator(tokenizer, max_len=40)(make_samples(n))


# ---------------------------------------------------------------------------- method and presets
def test_medvill_is_registered_with_presets_of_the_papers_shape():
    assert "medvill" in method_names()
    method = get_method("medvill")
    assert method.config_class() is MedVillConfig and method.model_class() is MedVillModel
    base = MedVillConfig.preset("base")
    assert (base.backbone, base.image_size, base.num_visual_tokens) == ("resnet50", 512, 180)
    assert (base.text_width, base.text_layers, base.text_heads, base.text_intermediate) == (768, 12, 12, 3072)
    assert base.attention_mask == "bar" and base.mlm_probability == 0.15 and base.irm_match_probability == 0.5
    tiny = MedVillConfig.preset("tiny")
    assert tiny.backbone == "test_resnet" and tiny.text_width == 64
    assert MedVillConfig.preset("medvill_tiny") == tiny
    with pytest.raises(InputError, match="no medvill preset 'huge'; available: base, tiny"):
        MedVillConfig.preset("huge")


def test_pipeline_config_resolves_medvill_with_overrides_and_names_bad_fields():
    from pipelines.config import resolve_model_config

    config = resolve_model_config({"method": "medvill", "preset": "tiny", "attention_mask": "s2s"})
    assert isinstance(config, MedVillConfig) and config.attention_mask == "s2s" and config.text_width == 64
    with pytest.raises(InputError) as err:
        resolve_model_config({"method": "medvill", "knowledge": "full"})
    assert err.value.field == "model.knowledge"
    with pytest.raises(InputError) as err:
        resolve_model_config({"method": "medvill", "attention_mask": "diagonal"})
    assert err.value.field == "model.attention_mask"


# ---------------------------------------------------------------------------- heads
def test_match_matrix_scores_every_pair_as_irm_scores_does(tokenizer):
    model = _model(tokenizer)
    batch = _batch(tokenizer)
    matrix = model.match_matrix(model.image_tokens(batch["image"]), model.text_side(batch), pairs_per_call=5)
    assert matrix.shape == (BATCH, BATCH)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    torch.testing.assert_close(matrix.diagonal(), model.irm_scores(batch["image"], ids, mask))
    rolled = torch.arange(BATCH).roll(1)
    torch.testing.assert_close(matrix[torch.arange(BATCH), rolled], model.irm_scores(batch["image"], ids[rolled], mask[rolled]))


@pytest.mark.parametrize(("mask", "scheme"), [("bar", "bar"), ("bi+s2s", "bi"), ("non_crossing", "non_crossing")])
def test_understanding_heads_read_the_joint_cls_under_the_understanding_scheme(tokenizer, mask, scheme):
    model = _model(tokenizer, attention_mask=mask)
    batch = _batch(tokenizer)
    assert model.understanding_scheme == scheme
    diagnosis = model.diagnosis_head()
    assert diagnosis.num_labels == 14 and diagnosis.unmentioned == "negative"
    logits = diagnosis.logits(batch["image"])
    # The image alone: the joint [CLS] of the image with an empty report, [SEP_L] only.
    sep = model.token_ids["sep"]
    cls = model.token_ids["cls"]
    empty = torch.tensor([[cls, sep]]).expand(BATCH, -1)
    expected = diagnosis.classifier(model.encode(batch["image"], empty, torch.ones_like(empty), scheme).joint_cls)
    torch.testing.assert_close(logits, expected)
    assert diagnosis(batch).losses["bce"].isfinite()

    vqa = model.vqa_head(num_answers=5)
    answers = vqa.logits(batch["image"], batch["input_ids"], batch["attention_mask"])
    assert answers.shape == (BATCH, 5)
    # The answer depends on the question: another question, other logits.
    other = vqa.logits(batch["image"], batch["input_ids"].roll(1, 0), batch["attention_mask"].roll(1, 0))
    assert not torch.allclose(answers, other)


def test_heads_register_only_the_modules_they_run(tokenizer):
    model = _model(tokenizer)
    irm = {id(p) for p in model.irm_head.parameters()}
    for head in (model.diagnosis_head(), model.vqa_head(3), model.report_generator()):
        own = {id(p) for p in head.parameters()}
        assert own and not own & irm, type(head).__name__
        assert {id(p) for p in model.encoder.parameters()} <= own


def test_report_generation_finetunes_mlm_under_s2s_only(tokenizer, monkeypatch):
    model = _model(tokenizer, attention_mask="bar")
    generator = model.report_generator().train()
    schemes = []
    original = type(model.encoder).forward

    def spy(self, images, text_ids, text_mask, scheme, generator=None):
        schemes.append(scheme)
        return original(self, images, text_ids, text_mask, scheme, generator)

    monkeypatch.setattr(type(model.encoder), "forward", spy)
    output = generator(_batch(tokenizer))
    assert schemes == ["s2s"] and set(output.losses) == {"mlm"}
    output.loss.backward()
    assert model.irm_head.classifier.weight.grad is None
    assert any(p.grad is not None for p in model.encoder.visual_sampler.parameters())


# ---------------------------------------------------------------------------- the pipelines
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("medvill") / "run"
    assert main(["pretrain", "--method", "medvill", "--out", str(run_dir), "--no-progress", *TINY_PRETRAIN,
                 "--set", "train.max_steps=3", "--set", "train.checkpoint_every=2"]) == 0
    return run_dir


@pytest.mark.timeout(300)
def test_pretrain_cli_runs_medvill_and_resumes_a_killed_run_exactly(pretrained, tmp_path, capsys):
    from safetensors.torch import load_file

    from model.pretrained import load_pretrained

    metrics = json.loads((pretrained / "metrics.json").read_text())
    retrieval = metrics["zero_shot_retrieval"]
    assert retrieval["ranked_by"] == "itm" and "itc" not in retrieval
    assert 0.0 < retrieval["itm"]["i2t_MRR"] <= 1.0 and 0.0 < retrieval["itm"]["chance"]["t2i_MRR"] <= 1.0
    log = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3]
    assert all(math.isfinite(row["mlm"]) and math.isfinite(row["irm"]) for row in steps)
    saved = load_pretrained(pretrained / "model")
    assert isinstance(saved, MedVillModel) and saved.config == MedVillConfig.preset("tiny")

    killed = tmp_path / "killed"
    shutil.copytree(pretrained, killed)
    shutil.rmtree(killed / "checkpoints" / "step_00000003")
    for name in ("metrics.json", "run.json"):
        (killed / name).unlink()
    shutil.rmtree(killed / "model")
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(killed), "--no-progress"]) == 0
    assert "resuming from step 2" in capsys.readouterr().out
    expected = load_file(pretrained / "checkpoints" / "step_00000003" / "model.safetensors")
    resumed = load_file(killed / "checkpoints" / "step_00000003" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name


def _headline(task: str, test: dict) -> list[float]:
    if task == "retrieval":
        itm = test["itm"]
        return [itm[f"{d}_{m}"] for d in ("i2t", "t2i") for m in ("R@1", "R@5", "R@10", "MRR")]
    if task == "generation":
        return [test[row][name] for row in ("greedy", "beam") for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr")]
    if task == "diagnosis":
        return [test["macro_f1"], test["micro_f1"]]
    return [test[row]["overall"] for row in ("model", "majority_answer")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("task", ["retrieval", "generation", "diagnosis", "vqa"])
def test_finetune_then_evaluate_every_task_from_a_medvill_run(task, pretrained, tmp_path):
    run_dir = tmp_path / task
    assert main(["finetune", "--task", task, "--from", str(pretrained), "--out", str(run_dir), "--no-progress",
                 *TINY_FINETUNE]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 2
    assert all(math.isfinite(v) for v in _headline(task, metrics["test"]))
    assert (run_dir / "head.safetensors").is_file() == (task in ("diagnosis", "vqa"))
    if task == "generation":
        assert "report_decoder" not in metrics  # MedViLL generates with its own encoder, nothing attached
        assert isinstance(metrics["test"]["greedy"]["BLEU-1"], float)
    out = tmp_path / "eval"
    assert main(["evaluate", "--task", task, "--model", str(run_dir), "--out", str(out), *TINY_FINETUNE[4:]]) == 0
    evaluated = json.loads((out / "metrics.json").read_text())["test"]
    assert _headline(task, evaluated) == pytest.approx(_headline(task, metrics["test"]), abs=1e-6)


def test_a_switched_off_objective_is_not_computed(tokenizer, monkeypatch):
    model = _model(tokenizer, mlm_weight=0.0).train()
    calls = []
    masked = model.masked_tokens
    monkeypatch.setattr(model, "masked_tokens", lambda *a, **k: calls.append(1) or masked(*a, **k))
    output = model(_batch(tokenizer), generator=torch.Generator().manual_seed(0))
    assert set(output.losses) == {"irm"} and not calls and torch.equal(output.loss, output.losses["irm"])
    assert set(_model(tokenizer, irm_weight=0.0).train()(_batch(tokenizer)).losses) == {"mlm"}
    with pytest.raises(InputError, match="both switched off"):
        MedVillConfig.preset("tiny").replace(mlm_weight=0.0, irm_weight=0.0)


@pytest.mark.slow
def test_s2s_finetuning_then_decoding_writes_each_images_own_report(tokenizer):
    # Four images told apart by a bright quadrant, each with its own report: after MLM under S2S
    # (the generation objective), left-to-right decoding from the image writes that report.
    torch.manual_seed(0)
    model = MedVillModel(MedVillConfig.preset("tiny").replace(dropout=0.0, num_visual_tokens=4), tokenizer)
    samples = make_samples(4)
    for i, sample in enumerate(samples):
        image = torch.full((3, 64, 64), 0.1)
        row, col = divmod(i, 2)
        image[:, row * 32 : row * 32 + 32, col * 32 : col * 32 + 32] = 0.9
        sample["image"] = image
    batch = MotorCollator(tokenizer, max_len=40)(samples)
    generator = model.report_generator().train()
    optimiser = torch.optim.AdamW(generator.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(300):
        loss = generator(batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    written = model.eval().generate(batch["image"], max_length=30)

    def words(text: str) -> str:
        return " ".join(text.replace(" .", ".").split())

    assert [words(text) for text in written] == [words(s["report"]) for s in samples]
