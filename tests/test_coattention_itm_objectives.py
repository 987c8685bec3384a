"""M3AE / ARL: ITM learns to match, and ``objectives`` combines the methods' losses freely."""
from __future__ import annotations

import pytest
import torch
from model_cases import REPORTS, make_batch

from kg.errors import InputError
from model.m3ae_config import OBJECTIVES
from model.processing import MotorCollator
from model.registry import get_method

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(method: str = "m3ae", **fields):
    """The method's tiny preset without dropout, with fields replaced."""
    config = get_method(method).config_class().preset("tiny").replace(dropout=0.0, **fields)
    return config.with_parts(fusion={"dropout": 0.0})


def build(config, tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    return get_method(config.method).build(config, tokenizer)


def losses_of(model, batch, seed: int = 1) -> dict[str, float]:
    torch.manual_seed(seed)
    return {name: value.item() for name, value in model(batch).losses.items()}


# ---------------------------------------------------------------------------- ITM learns
def class_image(label: int, generator: torch.Generator) -> torch.Tensor:
    """A noisy image whose bright rectangle sits where class ``label`` puts it (3, 64, 64)."""
    image = torch.rand(3, 64, 64, generator=generator) * 0.3
    row, column = divmod(label, 3)
    image[:, row * 32:(row + 1) * 32, column * 21:(column + 1) * 21] += 0.7
    return image


def test_itm_learns_to_match_on_a_small_learnable_problem(tokenizer):
    """Six reports, each with its own image pattern: ITM alone must fall well below the prior's entropy.

    Before the matching head standardised its inputs, the loss stayed at 0.637 (the entropy of the
    1 : 2 matched / unmatched prior) here for 200 steps and more.
    """
    config = tiny(objectives="itm")
    model = build(config, tokenizer)
    collate = MotorCollator.from_config(tokenizer, config)
    generator = torch.Generator().manual_seed(0)

    def batch() -> dict:
        labels = torch.randperm(len(REPORTS), generator=generator).repeat(2)
        # The same class is the same study: never a negative of itself.
        return collate([{"image": class_image(int(k), generator), "report": REPORTS[int(k)], "index": int(k)}
                        for k in labels])

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(45):
        loss = model(batch()).losses["itm"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    prior_entropy = 0.6365  # -(1/3 ln 1/3 + 2/3 ln 2/3)
    assert sum(history[-5:]) / 5 < prior_entropy - 0.15

    model.eval()
    test = collate([{"image": class_image(k, generator), "report": REPORTS[k], "index": k}
                    for k in range(len(REPORTS))])
    matrix = model.match_matrix(model.image_tokens(test["image"]), model.text_side(test))
    matched = matrix.diagonal()
    unmatched = matrix[~torch.eye(len(REPORTS), dtype=torch.bool)]
    assert matched.mean() > unmatched.mean() + 0.2
    # Zero-shot retrieval by ITM: each image's own report ranks in the top 3 of 6 more often than chance.
    ranks = (matrix > matched[:, None]).sum(1)
    assert (ranks < 3).float().mean() > 0.5


# ---------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("method, objectives, section", [
    ("m3ae", "itm,mim", {"mlm": {"enabled": False}}),
    ("m3ae", ["itm", "mlm"], {"mim": {"enabled": False}}),
    ("arl", "itm+mlm+mim", {"knowledge": {"ak": False}}),
])
def test_a_run_without_an_objective_equals_the_method_with_that_part_off(tokenizer, method, objectives, section):
    chosen = get_method(method).config_class().preset("tiny").replace(objectives=objectives)
    switched = get_method(method).config_class().preset("tiny").with_parts(**section)
    assert chosen.parts == switched.parts
    assert chosen.active_objectives == switched.active_objectives
    if method == "m3ae":  # ARL's batches need entities; its parts equality above is the point
        a, b = build(chosen, tokenizer), build(switched, tokenizer)
        assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
        batch = make_batch(tokenizer, chosen)
        assert losses_of(a, batch) == losses_of(b, batch)


def test_objectives_name_what_the_method_can_train(tokenizer):
    with pytest.raises(InputError, match="m3ae cannot train objective 'ak'; its objectives are itm, itc, mlm, mim"):
        tiny(objectives="itm,ak")
    with pytest.raises(InputError, match="cannot train objective 'lm'"):
        tiny("arl", objectives=["itm", "lm"])
    with pytest.raises(InputError, match="needs itm"):
        tiny(objectives="mlm,mim")
    with pytest.raises(InputError, match="lk"):  # ARL's knowledge-induced masking is a way of doing MLM
        tiny("arl", objectives="itm,mim")
    assert tiny(objectives="mim, itm, mim").objectives == ["itm", "mim"]  # canonical order, no repeats
    assert set(OBJECTIVES["m3ae"]) < set(OBJECTIVES["arl"])


def test_objectives_from_the_command_line_reach_the_model_config():
    from pipelines.config import parse_overrides, resolve_model_config

    (key, value), = parse_overrides(["model.objectives=itm,itc,mim"])
    config = resolve_model_config({"method": "m3ae", key.split(".", 1)[1]: value})
    assert config.active_objectives == ["itm", "itc", "mim"] and not config.parts.mlm.enabled
    assert resolve_model_config(config.to_dict() | {"method": "m3ae"}).active_objectives == ["itm", "itc", "mim"]


def test_itc_adds_its_projections_and_loss_and_draws_itm_negatives_by_similarity(tokenizer, monkeypatch):
    import model.m3ae as m3ae

    plain = build(tiny(), tokenizer)
    config = tiny(objectives="itm,itc,mlm,mim")
    with_itc = build(config, tokenizer)
    added = set(with_itc.state_dict()) - set(plain.state_dict())
    assert {name.split(".")[0] for name in added} == {"vision_proj", "text_proj", "temp"}
    batch = make_batch(tokenizer, config)
    drawn = []
    original = m3ae.sample_hard_negatives
    monkeypatch.setattr(m3ae, "sample_hard_negatives",
                        lambda i2t, t2i, index: drawn.append(i2t) or original(i2t, t2i, index))
    output = with_itc(batch)
    assert set(output.losses) == {"itm", "itc", "mlm", "mim"}
    assert drawn[0].std() > 0  # similarities, not the uniform weights of plain M3AE
    output.loss.backward()
    assert with_itc.vision_proj.weight.grad.abs().sum() > 0 and with_itc.temp.grad is not None


# ---------------------------------------------------------------------------- downstream heads
@pytest.mark.parametrize("method", ["m3ae", "arl"])
def test_diagnosis_reads_the_fused_pooled_output_of_the_image_alone(tokenizer, method):
    from model.coattention_heads import FusedDiagnosisHead

    config = tiny(method)
    names = ["heart", "effusion"] if config.parts.knowledge.uses_entities else None
    torch.manual_seed(0)
    model = get_method(method).build(config, tokenizer, entity_names=names)
    head = model.diagnosis_head(num_labels=14)
    assert isinstance(head, FusedDiagnosisHead) and head.fusion is model.parts.fusion
    assert head.image_encoder is model.image_encoder  # shared, not copied
    batch = make_batch(tokenizer, config)
    batch["labels"] = torch.nan_to_num(batch["labels"], nan=0.0)
    output = head(batch)
    assert head.logits(batch["image"]).shape == (4, 14) and torch.isfinite(output.loss)
    output.loss.backward()
    for part in (head.classifier, head.fusion, head.image_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    head.eval()
    other = make_batch(tokenizer, config)
    other["input_ids"] = other["input_ids"].roll(1, 0)  # another report: the image alone decides
    torch.testing.assert_close(head.logits(batch["image"]), head.logits(other["image"]))
    assert not torch.allclose(head.logits(batch["image"]), head.logits(batch["image"].flip(0)))


@pytest.mark.parametrize("method", ["m3ae", "arl"])
def test_vqa_reads_the_fused_pooled_output_of_image_and_question(tokenizer, method):
    from model.coattention_heads import FusedVQAHead

    config = tiny(method)
    names = ["heart", "effusion"] if config.parts.knowledge.uses_entities else None
    torch.manual_seed(0)
    model = get_method(method).build(config, tokenizer, entity_names=names)
    head = model.vqa_head(num_answers=5)
    assert isinstance(head, FusedVQAHead)
    batch = make_batch(tokenizer, config)
    batch["answer"] = torch.tensor([0, 1, 2, -100])
    output = head(batch)
    output.loss.backward()
    assert head.classifier.mlp[-1].weight.grad.abs().sum() > 0
    assert head.text_encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    head.eval()
    logits = head.logits(batch["image"], batch["input_ids"], batch["attention_mask"])
    asked_otherwise = head.logits(batch["image"], batch["input_ids"].roll(1, 0), batch["attention_mask"].roll(1, 0))
    assert logits.shape == (4, 5) and not torch.allclose(logits, asked_otherwise)
    with pytest.raises(InputError, match="at least 2 answers"):
        model.vqa_head(num_answers=1)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", ["m3ae", "arl"])
def test_finetune_diagnosis_and_vqa_from_a_method_checkpoint(tmp_path, method):
    import json
    import math

    from pipelines.cli import main

    small = ["--no-progress", "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "eval.batch_size=8"]
    pretrained = tmp_path / "pretrain"
    assert main(["pretrain", "--method", method, "--out", str(pretrained), "--set", "data.synthetic_n=24",
                 "--set", "model.objectives=itm,mlm", *small]) == 0
    for task, figure in (("diagnosis", lambda m: m["macro_f1"]), ("vqa", lambda m: m["model"]["overall"])):
        run_dir = tmp_path / task
        assert main(["finetune", "--task", task, "--from", str(pretrained), "--out", str(run_dir), *small]) == 0
        assert (run_dir / "head.safetensors").is_file()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert math.isfinite(figure(metrics["test"]))
        # evaluate rebuilds the method's own head from the saved weights and gets the same figures
        assert main(["evaluate", "--task", task, "--model", str(run_dir), "--out", str(tmp_path / f"{task}-eval")]) == 0
        again = json.loads((tmp_path / f"{task}-eval" / "metrics.json").read_text())
        assert figure(again["test"]) == pytest.approx(figure(metrics["test"]))
