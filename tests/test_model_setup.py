"""What a user sets up around MOTOR: configs, local weights, the collator, task heads, DDP queues."""
from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.multiprocessing as mp
from model_cases import BATCH, make_batch, make_samples, tiny_config

from kg.errors import InputError, MissingResourceError
from model import DiagnosisHead, MotorCollator, MotorConfig, VQAHead, build_model, load_tokenizer
from model.queues import FeatureQueue


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------- config
def test_presets_load_and_round_trip_through_yaml(tmp_path):
    import yaml

    tiny = MotorConfig.preset("tiny")
    assert tiny.image_size == 64 and tiny.knowledge == "full" and tiny.sk_max_len == 90
    assert MotorConfig.preset("base").vision_width == 768
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(tiny.replace(knowledge="gk").to_dict()))
    assert MotorConfig.from_yaml(path) == tiny.replace(knowledge="gk")


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("knowledge: everything\n", "knowledge"),
        ("uncertain: maybe\n", "uncertain"),
        ("vision_layers: 0\n", "vision_layers"),
        ("image_size: 70\n", "image_size"),
        ("text_heads: 5\n", "text_heads"),
        ("colour: blue\n", "colour"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path, content, field):
    path = tmp_path / "model.yaml"
    path.write_text(content)
    with pytest.raises(InputError) as caught:
        MotorConfig.from_yaml(path)
    assert caught.value.field == field and str(path) in str(caught.value)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(InputError, match="tiny"):
        MotorConfig.preset("huge")


# ---------------------------------------------------------------------------- local weights
def test_missing_text_model_dir_is_a_missing_resource(tmp_path, tokenizer):
    with pytest.raises(MissingResourceError, match="text_model_dir"):
        build_model(tiny_config("none", text_model_dir=str(tmp_path / "scibert")), tokenizer)
    with pytest.raises(MissingResourceError, match="tokenizer"):
        load_tokenizer(tmp_path / "scibert")


def test_missing_image_weights_is_a_missing_resource(tmp_path, tokenizer):
    with pytest.raises(MissingResourceError, match="image encoder weights"):
        build_model(tiny_config("none", image_weights=str(tmp_path / "vit.safetensors")), tokenizer)


def test_image_weights_load_from_safetensors_and_weights_only_torch_files(tmp_path, tokenizer):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = build_model(tiny_config("none"), tokenizer).image_encoder.vit.state_dict()
    save_file({k: v.contiguous() for k, v in source.items()}, str(tmp_path / "vit.safetensors"))
    torch.save({"model": source}, tmp_path / "vit.pth")
    for name in ("vit.safetensors", "vit.pth"):
        torch.manual_seed(2)
        model = build_model(tiny_config("gk", image_weights=str(tmp_path / name)), tokenizer)
        for key, value in model.image_encoder.vit.state_dict().items():
            assert torch.equal(value, source[key]), key
        # The momentum copy starts from the loaded weights too.
        assert torch.equal(model.momentum["image_encoder"].vit.pos_embed, source["pos_embed"])


def test_image_weights_that_do_not_fit_name_the_file(tmp_path, tokenizer):
    from safetensors.torch import save_file

    save_file({"something.else": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="other.safetensors"):
        build_model(tiny_config("none", image_weights=str(tmp_path / "other.safetensors")), tokenizer)


def test_local_bert_checkout_initialises_text_stacks_and_tokenizer(tmp_path):
    from transformers import BertConfig, BertModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "heart", "lung", "effusion"]
    bert_dir = tmp_path / "bert"
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=128))
    bert.save_pretrained(bert_dir)
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")

    local_tokenizer = load_tokenizer(bert_dir)
    assert {"[ENC]", "[DEC]"} <= set(local_tokenizer.get_vocab())
    config = tiny_config("sk", text_model_dir=str(bert_dir), text_width=64, knowledge_heads=2)
    model = build_model(config, local_tokenizer)
    assert model.config.text_width == 32 and model.config.text_layers == 1
    ours = model.text_encoder.encoder.layer[0].attention.self.query.weight
    assert torch.equal(ours, bert.encoder.layer[0].attention.self.query.weight)
    assert torch.equal(model.sk_encoder.encoder.encoder.layer[0].output.dense.weight,
                       bert.encoder.layer[0].output.dense.weight)
    rows = len(vocab)
    assert torch.equal(model.text_encoder.embeddings.word_embeddings.weight[:rows], bert.embeddings.word_embeddings.weight)
    batch = MotorCollator.from_config(local_tokenizer, model.config)(make_samples())
    assert torch.isfinite(model(batch).loss)


def _tiny_bert_checkout(directory):
    from transformers import BertConfig, BertModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "heart", "lung"]
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return directory


def test_a_local_bert_with_another_tokenizer_is_refused_naming_text_model_dir(tmp_path, tokenizer):
    bert_dir = _tiny_bert_checkout(tmp_path / "bert")
    config = tiny_config("none", text_model_dir=str(bert_dir), text_width=64)
    with pytest.raises(InputError, match="text_model_dir") as caught:
        build_model(config, tokenizer)  # the report-trained vocabulary, not the checkout's
    assert "vocabulary" in str(caught.value) and str(bert_dir) in str(caught.value)
    assert build_model(config, load_tokenizer(bert_dir)).config.text_width == 32


def test_pretraining_without_tokenizer_path_uses_the_text_model_dirs_tokenizer(tmp_path):
    from pipelines.config import TokenizerConfig
    from pipelines.distributed import init_distributed
    from pipelines.prepare import prepare_tokenizer

    bert_dir = _tiny_bert_checkout(tmp_path / "bert")
    ctx = init_distributed("cpu")
    loaded = prepare_tokenizer(TokenizerConfig(), ["a report"], tmp_path / "run", ctx, text_model_dir=str(bert_dir))
    assert loaded.get_vocab()["heart"] == 31 and not (tmp_path / "run" / "tokenizer").exists()
    with pytest.raises(MissingResourceError, match="vocab.txt"):
        prepare_tokenizer(TokenizerConfig(), ["a report"], tmp_path / "run", ctx, text_model_dir=str(tmp_path))


# ---------------------------------------------------------------------------- collator
def test_collator_normalises_and_pads(tokenizer):
    config = tiny_config("full")
    samples = make_samples()
    batch = MotorCollator.from_config(tokenizer, config)(samples)
    assert batch["image"].shape == (BATCH, 3, 64, 64)
    torch.testing.assert_close(batch["image"][0], (samples[0]["image"] - 0.5) / 0.5)
    assert batch["input_ids"].shape[0] == BATCH and batch["input_ids"].shape == batch["attention_mask"].shape
    assert (batch["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    assert batch["sk_input_ids"].shape[1] <= config.sk_max_len
    assert batch["sk_attention_mask"][2].sum() == 2  # the empty SK sentence is [CLS] [SEP]
    assert batch["labels"].shape == (BATCH, 14) and batch["index"].tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(batch["labels"], torch.stack([s["labels"] for s in samples]), equal_nan=True)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"labels": torch.tensor([2.0] + [math.nan] * 13)}, "labels"),
        ({"labels": torch.zeros(3)}, "labels"),
        ({"report": None}, "report"),
        ({"image": torch.zeros(64, 64)}, "image"),
    ],
)
def test_collator_names_the_bad_record_and_field(tokenizer, change, field):
    samples = make_samples()
    samples[1].update(change)
    with pytest.raises(InputError) as caught:
        MotorCollator.from_config(tokenizer, tiny_config())(samples)
    assert caught.value.field == field and "record 1" in str(caught.value)


# ---------------------------------------------------------------------------- heads
def test_diagnosis_head_trains_on_the_image_encoder(tokenizer):
    motor = build_model(tiny_config("full"), tokenizer)
    head = DiagnosisHead(motor)
    batch = make_batch(tokenizer, motor.config)
    assert head.logits(batch["image"]).shape == (BATCH, 14)
    output = head(batch)
    output.loss.backward()
    assert torch.isfinite(output.loss) and set(output.losses) == {"bce"}
    assert head.image_encoder is motor.image_encoder and head.image_encoder.vit.cls_token.grad is not None


@pytest.mark.parametrize("unmentioned", ["negative", "ignore"])
def test_diagnosis_scoring_reads_unmentioned_labels_as_the_head_was_trained(tokenizer, unmentioned):
    from pipelines.evaluate import diagnosis_scores

    motor = build_model(tiny_config("none").replace(unmentioned=unmentioned), tokenizer)
    samples = make_samples(n=6, seed=3)
    labels = torch.stack([s["labels"] for s in samples])
    y_true, y_prob = diagnosis_scores(
        DiagnosisHead(motor), samples, MotorCollator.from_config(tokenizer, motor.config),
        batch_size=4, device=torch.device("cpu"),
    )
    assert y_prob.shape == y_true.shape == (6, 14)
    unmentioned_truth = y_true[labels.isnan().numpy()]
    assert (unmentioned_truth == 0).all() if unmentioned == "negative" else bool(torch.isnan(torch.from_numpy(unmentioned_truth)).all())
    assert torch.isnan(torch.from_numpy(y_true)[labels == -1]).all()  # uncertain never scored
    known = (labels == 0) | (labels == 1)
    assert torch.equal(torch.from_numpy(y_true)[known], labels[known])


@pytest.mark.parametrize("knowledge", ["none", "gk+sk"])
def test_vqa_head_classifies_answers_over_the_image_grounded_encoder(tokenizer, knowledge):
    motor = build_model(tiny_config(knowledge), tokenizer)
    head = VQAHead(motor, num_answers=5)
    batch = make_batch(tokenizer, motor.config)
    batch["answer"] = torch.tensor([0, 4, -100, 2])
    assert head.logits(batch["image"], batch["input_ids"], batch["attention_mask"]).shape == (BATCH, 5)
    output = head(batch)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert all(p.grad is not None for p in head.classifier.parameters())
    assert head.text_encoder is motor.text_encoder
    with pytest.raises(InputError, match="num_answers"):
        VQAHead(motor, num_answers=1)


def test_training_batch_of_one_is_refused_with_a_clear_error(tokenizer):
    model = build_model(tiny_config("none"), tokenizer)
    with pytest.raises(InputError, match="at least 2"):
        model(make_batch(tokenizer, model.config, n=1))


# ---------------------------------------------------------------------------- DDP queues
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _queue_worker(rank: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        queue = FeatureQueue(5, {"value": ((), torch.long), "flag": ((), torch.bool)})
        # Rank 0 sends 2 rows, rank 1 sends 1 row (a short last batch) per step.
        for step in range(3):
            values = torch.arange(2 - rank) + 100 * step + 10 * rank
            queue.enqueue(value=values, flag=values % 2 == 0)
        torch.save(queue.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_queues_are_gathered_across_processes_in_rank_order(tmp_path):
    mp.spawn(_queue_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    queue = FeatureQueue(5, {"value": ((), torch.long), "flag": ((), torch.bool)})
    queue.load_state_dict(states[0])
    # 9 rows in arrival order: [0, 1, 10], [100, 101, 110], [200, 201, 210]; the last 5 remain.
    assert queue.ordered("value").tolist() == [101, 110, 200, 201, 210]
    assert queue.ordered("flag").tolist() == [False, True, True, False, True]
